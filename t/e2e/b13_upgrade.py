#!/usr/bin/env python3
"""Binary upgrade (USR2, WINCH, QUIT) under load, and descriptor hygiene."""
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def conf(port, origin):
    return simple_conf(port, [origin], routes="""
        { exact = "/v"; return = 200; body = "v\\n"; },
        { prefix = "/"; proxy_pass = "app"; }""")


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


class Load:
    """Fresh-connection GETs from a few threads until stopped (bounded)."""

    def __init__(self, port, threads=3, per_thread=4000):
        self.port = port
        self.ok = 0
        self.fail = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(per_thread,), daemon=True)
                        for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, n):
        for i in range(n):
            if self.stop.is_set():
                return
            target = "/v" if i % 2 else "/u%d?size=1500" % i
            try:
                r = request(self.port, target=target, timeout=10)
                good = r is not None and r.status == 200 and r.complete
                what = "%s -> %r" % (target, r)
            except Exception as e:      # noqa: BLE001 - every failure is counted
                good, what = False, "%s -> %r" % (target, e)
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.fail.append(what)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)


@test(timeout=120)
def binary_upgrade_under_load_no_failed_requests():
    o = Origin("o1")
    port = free_port()
    lg = Legate(conf(port, o), workers=2)
    pidfile = os.path.join(lg.prefix, "logs", "legate.pid")
    old = lg.pid
    eq(read_pid(pidfile), old)
    load = Load(port)
    new = 0
    try:
        wait_until(lambda: load.ok > 50, 10, what="load to start")
        lg.signal(signal.SIGUSR2)
        wait_until(lambda: read_pid(pidfile) not in (0, old), 10, what="the new master's pid file")
        new = read_pid(pidfile)
        ok(os.path.exists(pidfile + ".oldbin"), "pid file renamed to .oldbin")
        wait_until(lambda: len(children(new)) == 2, 10, what="the new master's workers")
        before = load.ok
        wait_until(lambda: load.ok > before + 50, 10, what="requests with both generations")
        lg.signal(signal.SIGWINCH)
        wait_until(lambda: [p for p in children(old) if p != new] == [], 15,
                   what="old workers to drain after WINCH")
        before = load.ok
        wait_until(lambda: load.ok > before + 50, 10, what="requests served by the new master only")
        lg.exit_expected = True
        lg.signal(signal.SIGQUIT)
        lg.wait_exit(15)
        before = load.ok
        wait_until(lambda: load.ok > before + 50, 10, what="requests after the old master left")
    finally:
        load.finish()
        if new:
            try:
                os.kill(new, signal.SIGQUIT)
                wait_until(lambda: not os.path.exists("/proc/%d" % new) or
                           open("/proc/%d/stat" % new).read().split()[2] == "Z", 15,
                           what="the new master to stop")
            except ProcessLookupError:
                pass
    eq(load.fail[:10], [], "failed requests (%d failed, %d ok)" % (len(load.fail), load.ok))
    contains(lg.log_text(), "binary upgrade: started new master")



def wait_master_gone(pid, timeout=15):
    wait_until(lambda: not os.path.exists("/proc/%d" % pid) or
               open("/proc/%d/stat" % pid).read().split()[2] == "Z", timeout,
               what="master %d to exit" % pid)


@test(timeout=180)
def upgrades_and_a_rollback_drop_no_request_of_clients_that_never_retry():
    """USR2 then QUIT to the old master, three times in a row, then an
    upgrade rolled back (QUIT to the new master): busy keep-alive clients that
    never retry lose nothing, because a draining worker answers their next
    request with Connection: close instead of closing under them."""
    o = Origin("o1")
    port = free_port()
    lg = Legate(conf(port, o), workers=2)
    pidfile = os.path.join(lg.prefix, "logs", "legate.pid")
    load = StrictKeepalive(port, clients=8)
    masters = [lg.pid]
    try:
        load.more(100, what="load to start")
        for k in range(3):
            old = masters[-1]
            os.kill(old, signal.SIGUSR2)
            wait_until(lambda: read_pid(pidfile) not in (0, old), 10, what="new master %d" % k)
            new = read_pid(pidfile)
            masters.append(new)
            wait_until(lambda: len(children(new)) == 2, 10, what="the new master's workers")
            load.more(100, what="requests with both generations")
            if old == lg.pid:
                lg.exit_expected = True
            os.kill(old, signal.SIGQUIT)
            wait_master_gone(old)
            load.more(100, what="requests after upgrade %d" % k)
        # rolled back: the new master goes, the old one stays
        cur = masters[-1]
        os.kill(cur, signal.SIGUSR2)
        wait_until(lambda: read_pid(pidfile) not in (0, cur), 10, what="the upgrade to roll back")
        tried = read_pid(pidfile)
        wait_until(lambda: len(children(tried)) == 2, 10, what="its workers")
        load.more(100, what="requests with both generations")
        os.kill(tried, signal.SIGQUIT)
        wait_master_gone(tried)
        wait_until(lambda: read_pid(pidfile) == cur, 10, what="the pid file back to the old master")
        load.more(200, what="requests after the rollback")
    finally:
        load.finish()
        for m in masters:
            try:
                os.kill(m, signal.SIGQUIT)
            except ProcessLookupError:
                pass
        for m in masters:
            try:
                wait_master_gone(m)
            except Exception:      # noqa: BLE001 - teardown: the check below reports
                pass
    eq(load.fail[:10], [], "failed requests (%d failed, %d ok)" % (len(load.fail), load.ok))


@test(timeout=60)
def no_descriptor_leak_after_errors_and_keepalive():
    o = Origin("o1")
    port = free_port()
    dead = free_port()
    text = """
http = {
    upstreams = {
        app = { servers = ( "%s" ); };
        gone = { servers = ( "127.0.0.1:%d" ); };
    };
    servers = ( {
        listen = "127.0.0.1:%d";
        routes = (
            { prefix = "/gone"; proxy_pass = "gone"; },
            { prefix = "/"; proxy_pass = "app"; }
        );
    } );
};
""" % (o.address, dead, port)
    lg = Legate(text, workers=1)
    w = lg.wait_workers(1)[0]
    request(port, target="/warm")
    base = fd_count(w)
    for i in range(200):
        target = ("/gone", "/x?size=100", "/x?reset=1", "/x?garbage=1")[i % 4]
        request(port, target=target, timeout=10)
    for i in range(50):     # malformed heads too
        http_raw(port, b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", timeout=5)
    lg.allow_log(r"\[error\]")
    # pooled upstream connections may stay open (keepalive), bounded by the pool
    wait_until(lambda: fd_count(w) <= base + 2, 10,
               what="worker descriptors back near %d (now %d)" % (base, fd_count(w)))


if __name__ == "__main__":
    main()

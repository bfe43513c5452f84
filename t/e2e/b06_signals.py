#!/usr/bin/env python3
"""Master signals: HUP, QUIT, TERM, USR1, WINCH, a killed worker, -s."""
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def conf(port, origin, version, extra=""):
    """/v answers the config's version; everything else goes to the origin."""
    return simple_conf(port, [origin], server_extra=extra, routes="""
        { exact = "/v"; return = 200; body = "%s\\n"; },
        { prefix = "/"; proxy_pass = "app"; }""" % version)


def version(lg):
    r = request(lg.port, target="/v")
    eq(r.status, 200)
    return r.body.decode().strip()


@test
def worker_processes_count():
    o = Origin("o1")
    lg = Legate(conf(free_port(), o, "A"), workers=3)
    eq(len(lg.wait_workers(3)), 3)
    ok(lg.pid not in lg.workers())


@test
def pid_file_holds_master_pid():
    o = Origin("o1")
    lg = Legate(conf(free_port(), o, "A"))
    path = os.path.join(lg.prefix, "logs", "legate.pid")
    wait_until(lambda: os.path.exists(path), 5, what="pid file")
    with open(path) as f:
        eq(f.read().strip(), str(lg.pid))


@test
def hup_reload_switches_behaviour():
    o = Origin("o1")
    port = free_port()
    lg = Legate(conf(port, o, "A"))
    eq(version(lg), "A")
    old = set(lg.workers())
    new = lg.reload(conf(port, o, "B"))
    ok(not (set(new) & old), "old workers still there")
    eq(version(lg), "B")
    eq(request(lg.port, target="/p").body, b"origin o1 /p\n")
    lg.wait_log(r"\[notice\].*reconfigur|\[notice\].*reload", 5)


@test
def hup_bad_config_keeps_old_config():
    o = Origin("o1")
    port = free_port()
    lg = Legate(conf(port, o, "A"))
    lg.allow_log(r"legate\.conf")           # the reported error names the file
    bad = conf(port, o, "B").replace('return = 200;', 'return = 200; no_such_setting = 1;')
    lg.reload(bad, expect_ok=False)
    eq(version(lg), "A")
    lg.wait_log(r"legate\.conf:\d+", 5, what="file:line of the bad setting in the error log")
    # and a later good reload still works
    lg.reload(conf(port, o, "C"))
    eq(version(lg), "C")


@test
def hup_syntax_error_keeps_old_config():
    o = Origin("o1")
    port = free_port()
    lg = Legate(conf(port, o, "A"))
    lg.allow_log(r"legate\.conf")
    lg.reload("http = { servers = ( { listen = ", expect_ok=False)
    eq(version(lg), "A")


@test
def reload_changes_listen_port():
    o = Origin("o1")
    p1, p2 = free_port(), free_port()
    lg = Legate(conf(p1, o, "A"))
    lg.reload(conf(p2, o, "B"))
    eq(request(p2, target="/v").body, b"B\n")

    def old_port_closed():
        try:
            request(p1, target="/v", timeout=2)
            return False
        except OSError:
            return True
    wait_until(old_port_closed, 10, what="old listen port to close")


@test
def repeated_reloads_do_not_leak_master_fds():
    o = Origin("o1")
    port = free_port()
    lg = Legate(conf(port, o, "A"))
    lg.reload(conf(port, o, "B"))
    base = fd_count(lg.pid)
    for i in range(6):
        lg.reload(conf(port, o, "v%d" % i))
        eq(version(lg), "v%d" % i)
    ok(fd_count(lg.pid) <= base + 1, "master fds %d -> %d after 6 reloads"
       % (base, fd_count(lg.pid)))


@test
def quit_drains_inflight_request():
    o = Origin("o1")
    lg = Legate(conf(free_port(), o, "A"), workers=1)
    result = {}

    def slow():
        try:
            result["r"] = request(lg.port, target="/slow?delay=2000&size=100000", timeout=20)
        except Exception as e:
            result["e"] = e
    t = threading.Thread(target=slow)
    t.start()
    wait_until(lambda: o.stats()["requests"] == 1, 5, what="slow request at origin")
    lg.signal(signal.SIGQUIT)

    def refused():
        try:
            request(lg.port, target="/v", timeout=1)
            return False
        except OSError:
            return True
    wait_until(refused, 5, what="listener to stop accepting after QUIT")
    t.join(20)
    ok("e" not in result, "in-flight request failed: %r" % result.get("e"))
    r = result["r"]
    eq(r.status, 200)
    ok(r.complete and r.body == pattern(100000), "in-flight body incomplete")
    lg.wait_exit(10)


@test
def quit_closes_idle_keepalive_connections():
    o = Origin("o1")
    lg = Legate(conf(free_port(), o, "A"), workers=1)
    with Conn(lg.port) as c:
        eq(c.request(target="/v").status, 200)
        lg.signal(signal.SIGQUIT)
        ok(c.closed(8), "idle keep-alive connection kept open during graceful stop")
    lg.wait_exit(10)


@test
def shutdown_timeout_bounds_drain():
    o = Origin("o1")
    lg = Legate('shutdown_timeout = "1s";\n' + conf(free_port(), o, "A"), workers=1)
    th = threading.Thread(target=lambda: http_raw(lg.port, "GET /h?delay=30000 HTTP/1.1\r\n"
                                                            "Host: x\r\n\r\n", timeout=15))
    th.start()
    wait_until(lambda: o.stats()["requests"] == 1, 5, what="request at origin")
    t0 = time.monotonic()
    lg.signal(signal.SIGQUIT)
    lg.wait_exit(8)
    ok(time.monotonic() - t0 < 6, "drain not bounded by shutdown_timeout 1s")
    th.join(20)


@test
def term_exits_fast():
    o = Origin("o1")
    lg = Legate(conf(free_port(), o, "A"))
    th = threading.Thread(target=lambda: http_raw(lg.port, "GET /h?delay=30000 HTTP/1.1\r\n"
                                                            "Host: x\r\n\r\n", timeout=15))
    th.start()
    wait_until(lambda: o.stats()["requests"] == 1, 5, what="request at origin")
    workers = lg.workers()
    t0 = time.monotonic()
    lg.signal(signal.SIGTERM)
    lg.wait_exit(5)
    ok(time.monotonic() - t0 < 3, "TERM took %.1fs" % (time.monotonic() - t0))
    for w in workers:
        ok(not os.path.exists("/proc/%d/status" % w) or
           "State:\tZ" in open("/proc/%d/status" % w).read(), "worker %d survived TERM" % w)
    th.join(20)


@test
def int_exits_fast():
    o = Origin("o1")
    lg = Legate(conf(free_port(), o, "A"))
    lg.signal(signal.SIGINT)
    lg.wait_exit(5)


@test
def usr1_reopens_logs():
    o = Origin("o1")
    lg = Legate(conf(free_port(), o, "A"))
    eq(request(lg.port, target="/before-rotate").status, 200)
    wait_until(lambda: "/before-rotate" in open(lg.access_log).read(), 5,
               what="first request in access.log")
    os.rename(lg.access_log, lg.access_log + ".1")
    os.rename(lg.error_log, lg.error_log + ".1")
    lg.signal(signal.SIGUSR1)
    wait_until(lambda: os.path.exists(lg.access_log) and os.path.exists(lg.error_log), 5,
               what="new access.log and error.log after USR1")

    # workers reopen asynchronously: poll with fresh requests
    def logged():
        request(lg.port, target="/after-rotate")
        return "/after-rotate" in open(lg.access_log).read()
    wait_until(logged, 10, interval=0.2, what="request in the new access.log")
    with open(lg.access_log + ".1") as f:
        ok("/after-rotate" not in f.read(), "request logged to the rotated file")


@test
def killed_worker_is_replaced():
    o = Origin("o1")
    lg = Legate(conf(free_port(), o, "A"), workers=2)
    lg.allow_log(r"signal 9|SIGKILL|killed|exited on signal")
    before = lg.wait_workers(2)
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(lg.workers()) == 2 and victim not in lg.workers(), 10,
               what="a replacement worker")
    for i in range(20):
        eq(request(lg.port, target="/p%d" % i).status, 200)
    ok(lg.alive(), "master died")


@test
def winch_stops_workers_master_stays():
    o = Origin("o1")
    lg = Legate(conf(free_port(), o, "A"), workers=2)
    lg.signal(signal.SIGWINCH)
    wait_until(lambda: lg.workers() == [], 10, what="workers to exit after WINCH")
    ok(lg.alive(), "master exited on WINCH")
    # and it stays that way (no respawn): check for a little while
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        eq(lg.workers(), [], "workers respawned after WINCH")
        time.sleep(0.1)


@test
def winch_then_hup_restarts_workers():
    o = Origin("o1")
    lg = Legate(conf(free_port(), o, "A"), workers=2)
    lg.signal(signal.SIGWINCH)
    wait_until(lambda: lg.workers() == [], 10, what="workers to exit after WINCH")
    lg.signal(signal.SIGHUP)
    lg.wait_workers(2, timeout=10)
    eq(version(lg), "A")


@test
def s_flag_signals_master():
    o = Origin("o1")
    port = free_port()
    lg = Legate(conf(port, o, "A"))
    old = set(lg.workers())
    with open(lg.conf_path, "w") as f:
        f.write(lg.conf_text.replace('body = "A\\n"', 'body = "B\\n"'))
    rc, out, err = run_legate(["-s", "reload", "-p", lg.prefix, "-c", lg.conf_path])
    eq(rc, 0, "legate -s reload: " + err)
    wait_until(lambda: len(lg.workers()) == lg.nworkers and not (set(lg.workers()) & old), 10,
               what="new workers after -s reload")
    eq(version(lg), "B")
    rc, out, err = run_legate(["-s", "quit", "-p", lg.prefix, "-c", lg.conf_path])
    eq(rc, 0, "legate -s quit: " + err)
    lg.wait_exit(10)


@test(timeout=120)
def reload_under_load_no_failed_requests():
    o = Origin("o1")
    port = free_port()
    lg = Legate(conf(port, o, "A"), workers=2)
    stop = threading.Event()
    stats = {"ok": 0, "fail": []}
    lock = threading.Lock()

    def record(good, what=None):
        with lock:
            if good:
                stats["ok"] += 1
            else:
                stats["fail"].append(what)

    def fresh_connections(n):
        for i in range(n):
            if stop.is_set():
                return
            target = "/v" if i % 2 else "/p%d?size=2000" % i
            try:
                r = request(port, target=target, timeout=10)
                good = r is not None and r.status == 200 and r.complete
                record(good, "%s -> %r" % (target, r))
            except Exception as e:
                record(False, "%s -> %r" % (target, e))

    def keepalive(n):
        c = None
        for i in range(n):
            if stop.is_set():
                break
            target = "/v" if i % 2 else "/k%d?size=2000" % i
            for attempt in (1, 2):
                fresh = c is None
                try:
                    if c is None:
                        c = Conn(port, timeout=10)
                    r = c.request(target=target)
                except OSError as e:
                    r, err = None, e
                if r is not None and r.status == 200 and r.complete:
                    record(True)
                    if "close" in r.headers.get("Connection", "").lower():
                        c.close()
                        c = None
                    break
                if c is not None:
                    c.close()
                    c = None
                # A reused idle connection closed by a draining worker before
                # any response byte: a client retries it on a new connection.
                if r is None and not fresh and attempt == 1:
                    continue
                record(False, "%s -> %r" % (target, r))
                break
        if c is not None:
            c.close()

    threads = [threading.Thread(target=fresh_connections, args=(3000,)) for _ in range(2)] + \
              [threading.Thread(target=keepalive, args=(3000,)) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: stats["ok"] > 50, 10, what="load to start")
        for v in ("B", "C", "D"):
            before = stats["ok"]
            lg.reload(conf(port, o, v))
            wait_until(lambda: stats["ok"] > before + 50, 10, what="requests after reload")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    eq(stats["fail"][:10], [], "failed requests (%d failed, %d ok)"
       % (len(stats["fail"]), stats["ok"]))
    eq(version(lg), "D")



@test
def reloads_drop_no_request_of_a_client_that_never_retries():
    """A draining worker answers a busy keep-alive connection's next request
    with Connection: close instead of closing it under the client."""
    o = Origin("o1")
    port = free_port()
    lg = Legate(conf(port, o, "A"), workers=2)
    load = StrictKeepalive(port, clients=8)
    try:
        load.more(100, what="load to start")
        for k in range(10):
            lg.reload(conf(port, o, "v%d" % k))
            load.more(100, what="requests after reload %d" % k)
    finally:
        load.finish()
    eq(load.fail[:10], [], "failed requests (%d failed, %d ok)" % (len(load.fail), load.ok))
    eq(version(lg), "v9")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Listening on IPv6 and unix sockets; limits above the machine's warn, not
fail; a worker crashing in a loop is restarted with a growing delay."""
import os
import re
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403


def have_ipv6():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@test
def ipv6_and_unix_listeners():
    o = Origin("o")
    d = tempfile.mkdtemp(prefix="legate-sock-")
    path = os.path.join(d, "legate.sock")
    port, port6 = free_port(), free_port("::1") if have_ipv6() else 0
    listens = ['"127.0.0.1:%d"' % port, '"unix:%s"' % path]
    if port6:
        listens.append('"[::1]:%d"' % port6)
    Legate("""
http = { upstreams = { app = { servers = ( "%s" ); }; };
  servers = ( { listen = ( %s ); routes = ( { prefix = "/"; proxy_pass = "app"; } ); } ); };
""" % (o.address, ", ".join(listens)), workers=2)
    st, _, body = curl("--unix-socket", path, "http://localhost/u")
    eq((st, body), (200, b"origin o /u\n"), "over the unix socket")
    if port6:
        st, _, body = curl("http://[::1]:%d/v6" % port6)
        eq((st, body), (200, b"origin o /v6\n"), "over IPv6")


@test
def rlimit_above_the_hard_limit_warns():
    o = Origin("o")
    port = free_port()
    lg = Legate("worker_rlimit_nofile = 100000000;\nworker_connections = 100000;\n" +
                simple_conf(port, [o]), workers=1)
    lg.wait_log(r"\[warn\].*worker_rlimit_nofile 100000000 is above the hard limit", 5)
    eq(request(port, target="/x").status, 200, "and serves anyway")


@test(timeout=90)
def crash_loop_backoff():
    o = Origin("o")
    port = free_port()
    lg = Legate(simple_conf(port, [o]), workers=1)
    lg.allow_log(r"exited on signal|die right after start")
    # kill each new worker as soon as it appears: the master must slow down
    t0 = time.monotonic()
    killed = set()
    while time.monotonic() - t0 < 8 and not re.search(r"respawning in \d+ ms", lg.log_text()):
        for w in lg.workers():
            if w not in killed:
                try:
                    os.kill(w, signal.SIGKILL)   # (not SEGV: a sanitizer would report it)
                    killed.add(w)
                except ProcessLookupError:
                    pass
        time.sleep(0.02)
    ok(re.search(r"workers die right after start: respawning in \d+ ms", lg.log_text()),
       "the master backs off (%d workers killed)" % len(killed))
    lg.wait_workers(1, timeout=20)
    eq(request(port, target="/after").status, 200, "and comes back")


@test
def a_port_another_process_listens_on_is_refused():
    """Another process's SO_REUSEPORT listener (a second proxy of the same
    user) must not silently share legate's address: startup fails naming
    it, and a reload that adds it keeps the old configuration serving."""
    o = Origin("o")
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    other.listen(8)
    taken = other.getsockname()[1]
    try:
        lg = Legate(simple_conf(taken, [o]), workers=1, start=False)
        lg.allow_log(r"another process listens there")
        lg.exit_expected = True
        try:
            lg.start(10)
            fail("legate started on a port another process listens on")
        except TestFailure as e:
            ok("exited" in str(e), "startup failed: %s" % str(e)[:80])
        ok(re.search(r"bind\(\) to 127\.0\.0\.1:%d failed: Address already in use "
                     r"\(another process listens there\)" % taken, lg.log_text()),
           "the log names the address")
        port = free_port()
        lg2 = Legate(simple_conf(port, [o]), workers=1)
        lg2.allow_log(r"another process listens there")
        both = simple_conf(port, [o]).replace('listen = "127.0.0.1:%d";' % port,
                                              'listen = ( "127.0.0.1:%d", "127.0.0.1:%d" );'
                                              % (port, taken))
        ok(both != simple_conf(port, [o]), "the second address is in the config")
        lg2.reload(both, expect_ok=False)
        ok(re.search(r"127\.0\.0\.1:%d.*another process listens there" % taken, lg2.log_text()),
           "the reload's failure names the address")
        eq(request(port, target="/still").status, 200, "the old configuration serves")
    finally:
        other.close()


if __name__ == "__main__":
    main()

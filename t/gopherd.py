#!/usr/bin/env python3
"""A small Gopher server for tests (RFC 1436; Python 3 standard library only).

Usage:
    gopherd.py [--port N] [--exit-on-eof]

It binds TCP 127.0.0.1 (port 0 = any free port unless --port), prints
"PORT n" on stdout once it listens, and answers each connection's selector
line, then closes (Gopher's end of an answer):

  ""  or "/"   the root menu: an information line, a text file, a submenu,
               a binary, a search, an HTML link, and items whose display
               strings, selectors and hosts carry hostile HTML (<script>,
               quotes, ampersands) -- what a gateway must escape
  /about.txt   a text file (type 0)
  /sub         a submenu (type 1)
  /bin         2,000,000 bytes from random.Random(7) (type 9), sent in
               small writes so the relay is streamed
  /search<TAB>words
               a menu saying "You searched for: words" (type 7)
  /empty       nothing at all
  /huge        a menu of 2 MB (more than a gateway should read whole)
  anything else: a type-3 error line menu

With --exit-on-eof it exits when its standard input reaches end of file,
so a test that dies cannot leave it running.
"""

import argparse
import random
import socket
import sys
import threading

BIN = random.Random(7).randbytes(2000000)


def menu(host, port):
    hp = "%s\t%d" % (host, port)
    lines = [
        'iWelcome to <b>legate</b> & "friends"\tfake\t(NULL)\t0',
        "0About <script>alert(1)</script>\t/about.txt\t" + hp,
        "1Sub menu\t/sub\t" + hp,
        "9Binary file\t/bin\t" + hp,
        "7Search here\t/search\t" + hp,
        'hWeb link\tURL:http://example.com/?a=1&b="2"\t' + hp,
        '1Evil host\t/x\tevil"><script>alert(2)</script>\t70',
        "1Quote in selector\t/q\"onmouseover=alert(3)\t" + hp,
        "3An error line <i>here</i>\t\terror.host\t1",
    ]
    return ("\r\n".join(lines) + "\r\n.\r\n").encode()


def answer(conn, host, port):
    conn.settimeout(30)
    buf = b""
    while b"\n" not in buf and len(buf) < 4096:
        x = conn.recv(4096)
        if not x:
            return
        buf += x
    sel = buf.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    if sel in ("", "/"):
        conn.sendall(menu(host, port))
    elif sel == "/about.txt":
        conn.sendall(b"This is a test text.\r\nIt has <two> lines & more.\r\n")
    elif sel == "/sub":
        conn.sendall(("0Inner file\t/about.txt\t%s\t%d\r\n.\r\n" % (host, port)).encode())
    elif sel == "/bin":
        for i in range(0, len(BIN), 65536):
            conn.sendall(BIN[i:i + 65536])
    elif sel.startswith("/search\t"):
        words = sel.split("\t", 1)[1]
        conn.sendall(("iYou searched for: %s\tfake\t(NULL)\t0\r\n.\r\n" % words).encode())
    elif sel == "/empty":
        pass
    elif sel == "/huge":
        line = ("0Item number %%06d\t/about.txt\t%s\t%d\r\n" % (host, port)).encode()
        for i in range(0, 50000):
            conn.sendall(line % i)
    else:
        conn.sendall(("3No such selector: %s\t\terror.host\t1\r\n.\r\n" % sel).encode())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--exit-on-eof", action="store_true")
    a = ap.parse_args()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.port))
    ls.listen(64)
    port = ls.getsockname()[1]
    print("PORT %d" % port, flush=True)
    if a.exit_on_eof:
        def watch():
            sys.stdin.read()
            import os
            os._exit(0)
        threading.Thread(target=watch, daemon=True).start()

    def one(c):
        try:
            answer(c, "127.0.0.1", port)
        except OSError:
            pass
        finally:
            c.close()
    while True:
        c, _ = ls.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()

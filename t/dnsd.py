#!/usr/bin/env python3
"""A tiny authoritative DNS server for tests (Python 3 standard library only).

Usage:
    dnsd.py [--port N] [--ttl S] [--zone FILE.json] [--drop NAME]...
            [--delay NAME=MS]... [--servfail NAME]... [--stats FILE]
            [--exit-on-eof] [NAME=ADDR[,ADDR...][/TTL]]...

It binds UDP 127.0.0.1 (port 0 = any free port unless --port) and prints
"PORT n" on stdout once it is ready.  It answers A and AAAA queries from the
zone, authoritatively:

  - a name in the zone: its addresses of the asked type (no address of that
    type: NOERROR with no answer, "NODATA");
  - any other name: NXDOMAIN;
  - --drop NAME: never answers queries for NAME (to test timeouts);
  - --delay NAME=MS: answers NAME only after MS milliseconds;
  - --servfail NAME: answers SERVFAIL.

The zone comes from the command line (NAME=ADDR,ADDR/TTL, e.g.
"www.test=192.0.2.1,2001:db8::1/60") and/or a JSON file:
    {"ttl": 60, "names": {"a.test": ["192.0.2.1"],
                          "b.test": {"addrs": ["2001:db8::2"], "ttl": 1}}}
Names are case-insensitive; a trailing dot does not matter.  The default
TTL is --ttl (300).  The zone file is read again when its modification time
or size changes (checked at each query; write it by rename), so a test can
change an answer while the server runs; command-line entries stay on top.

Query counts.  Every query received is counted per (name, type), dropped
and delayed ones included, before it is answered, so a client that has its
answer can read a count that includes its query:
  - with --stats FILE, FILE is rewritten (atomically, by rename) after every
    query, one "NAME TYPE COUNT" line per pair, sorted ("a.test A 2");
  - a TXT query for "_stats" answers one TXT string per pair in the same
    format (e.g. `dig @127.0.0.1 -p N _stats TXT`); it is not counted.

With --exit-on-eof it exits when its standard input reaches end of file, so
a test that dies cannot leave it running: give it a pipe and keep the
write end open.
"""

import argparse
import ipaddress
import json
import os
import select
import socket
import struct
import sys
import time

T_A, T_AAAA, T_TXT = 1, 28, 16
TYPE_NAMES = {T_A: "A", T_AAAA: "AAAA", T_TXT: "TXT"}


def norm(name):
    return name.lower().rstrip(".")


def parse_entry(text, default_ttl):
    name, _, rest = text.partition("=")
    ttl = default_ttl
    if "/" in rest:
        rest, _, t = rest.rpartition("/")
        ttl = int(t)
    addrs = [a for a in rest.split(",") if a]
    return norm(name), {"addrs": [ipaddress.ip_address(a) for a in addrs], "ttl": ttl}


def load_zone(path, default_ttl):
    with open(path) as f:
        doc = json.load(f)
    ttl = doc.get("ttl", default_ttl)
    zone = {}
    for name, v in doc.get("names", {}).items():
        if isinstance(v, list):
            v = {"addrs": v}
        zone[norm(name)] = {"addrs": [ipaddress.ip_address(a) for a in v.get("addrs", [])],
                            "ttl": int(v.get("ttl", ttl))}
    return zone


def read_name(msg, off):
    """Returns (name, offset after the name); follows compression pointers."""
    labels, jumped, end, hops = [], False, off, 0
    while True:
        if off >= len(msg):
            raise ValueError("truncated name")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg) or hops > 32:
                raise ValueError("bad pointer")
            if not jumped:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumped, hops = True, hops + 1
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii", "replace"))
        off += n
    return ".".join(labels), (end if jumped else off)


class Server:
    def __init__(self, args):
        self.args = args
        self.zone_stamp = None
        self.reload_zone()
        self.drop = {norm(n) for n in args.drop}
        self.servfail = {norm(n) for n in args.servfail}
        self.delay = {}
        for d in args.delay:
            name, _, ms = d.partition("=")
            self.delay[norm(name)] = int(ms) / 1000.0
        self.stats_file = args.stats
        self.counts = {}
        self.pending = []           # (due time, payload, address)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", args.port))
        self.exit_on_eof = args.exit_on_eof

    def reload_zone(self):
        args = self.args
        if self.zone_stamp is not None and args.zone:
            try:
                st = os.stat(args.zone)
            except OSError:
                return
            if (st.st_mtime_ns, st.st_size, st.st_ino) == self.zone_stamp:
                return
        zone = {}
        if args.zone:
            st = os.stat(args.zone)
            self.zone_stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            zone.update(load_zone(args.zone, args.ttl))
        else:
            self.zone_stamp = ()
        for e in args.entries:
            name, rec = parse_entry(e, args.ttl)
            zone[name] = rec
        self.zone = zone

    def stats_lines(self):
        return ["%s %s %d" % (n, t, c) for (n, t), c in sorted(self.counts.items())]

    def write_stats(self):
        if not self.stats_file:
            return
        tmp = self.stats_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("".join(line + "\n" for line in self.stats_lines()))
        os.replace(tmp, self.stats_file)

    def answer(self, msg):
        if len(msg) < 12:
            return None, None
        qid, flags, qd = struct.unpack("!HHH", msg[:6])
        if flags & 0x8000 or qd != 1:
            return None, None
        qname, off = read_name(msg, 12)
        if off + 4 > len(msg):
            return None, None
        qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
        question = msg[12:off + 4]
        name = norm(qname)
        self.reload_zone()
        rd = flags & 0x0100
        opcode = flags & 0x7800

        answers = []
        if name == "_stats" and qtype == T_TXT:
            rcode = 0
            for line in self.stats_lines():
                data = line.encode()[:255]
                rdata = bytes([len(data)]) + data
                answers.append(struct.pack("!HHHIH", 0xC00C, T_TXT, 1, 0, len(rdata)) + rdata)
        else:
            key = (name, TYPE_NAMES.get(qtype, str(qtype)))
            self.counts[key] = self.counts.get(key, 0) + 1
            self.write_stats()
            if name in self.drop:
                return None, name
            if name in self.servfail:
                rcode = 2
            elif name not in self.zone:
                rcode = 3
            else:
                rcode = 0
                rec = self.zone[name]
                for a in rec["addrs"]:
                    if (qtype == T_A and a.version == 4) or (qtype == T_AAAA and a.version == 6):
                        rdata = a.packed
                        answers.append(struct.pack("!HHHIH", 0xC00C, qtype, 1, rec["ttl"],
                                                   len(rdata)) + rdata)
        # QR, AA, opcode and RD copied, RA clear
        rflags = 0x8000 | opcode | 0x0400 | rd | rcode
        header = struct.pack("!HHHHHH", qid, rflags, 1, len(answers), 0, 0)
        return header + question + b"".join(answers), name

    def run(self):
        port = self.sock.getsockname()[1]
        sys.stdout.write("PORT %d\n" % port)
        sys.stdout.flush()
        rlist = [self.sock]
        if self.exit_on_eof:
            rlist.append(sys.stdin)
        while True:
            now = time.monotonic()
            timeout = None
            if self.pending:
                timeout = max(0.0, min(p[0] for p in self.pending) - now)
            ready, _, _ = select.select(rlist, [], [], timeout)
            if sys.stdin in ready:
                if not os.read(sys.stdin.fileno(), 4096):
                    return
            if self.sock in ready:
                try:
                    msg, peer = self.sock.recvfrom(4096)
                    reply, name = self.answer(msg)
                except (ValueError, struct.error):
                    reply, name = None, None
                if reply is not None:
                    d = self.delay.get(name)
                    if d:
                        self.pending.append((time.monotonic() + d, reply, peer))
                    else:
                        self.sock.sendto(reply, peer)
            now = time.monotonic()
            due = [p for p in self.pending if p[0] <= now]
            self.pending = [p for p in self.pending if p[0] > now]
            for _, reply, peer in due:
                self.sock.sendto(reply, peer)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ttl", type=int, default=300)
    ap.add_argument("--zone")
    ap.add_argument("--drop", action="append", default=[])
    ap.add_argument("--delay", action="append", default=[])
    ap.add_argument("--servfail", action="append", default=[])
    ap.add_argument("--stats")
    ap.add_argument("--exit-on-eof", action="store_true")
    ap.add_argument("entries", nargs="*", metavar="NAME=ADDR[,ADDR...][/TTL]")
    args = ap.parse_args()
    try:
        Server(args).run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

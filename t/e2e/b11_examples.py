#!/usr/bin/env python3
"""Every shipped config (conf/*.conf, conf/examples/*.conf) passes `legate -t`
as it is, from any directory: with an empty temporary prefix, and with no
-p at all (what it writes would go under the configure prefix; what it
reads -- certificates, blocklists -- sits beside it)."""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

CONFS = sorted(glob.glob(os.path.join(REPO, "conf", "*.conf")) +
               glob.glob(os.path.join(REPO, "conf", "examples", "*.conf")))


def register(path):
    def t():
        prefix = tempfile.mkdtemp(prefix="legate-ex-")
        try:
            rc, out, err = run_legate(["-t", "-p", prefix, "-c", path], prefix=prefix)
            eq(rc, 0, "legate -t -p %s -c %s\n%s" % (prefix, path, err))
            contains(err, "legate: configuration file %s test is successful" % path)
            reports = [f for f in os.listdir(prefix) if f.startswith(("asan", "ubsan"))]
            eq(reports, [], "sanitizer reports")
            p = subprocess.run([LEGATE_BIN, "-t", "-c", os.path.relpath(path, "/")], cwd="/",
                               capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
            eq(p.returncode, 0, "cd / && legate -t -c %s (no -p):\n%s"
               % (os.path.relpath(path, "/"), p.stderr.decode(errors="replace")))
        finally:
            shutil.rmtree(prefix, ignore_errors=True)
    t.__name__ = os.path.relpath(path, REPO)
    test(t)


for p in CONFS:
    register(p)

if __name__ == "__main__":
    if not CONFS:
        skip_all("no conf/*.conf or conf/examples/*.conf yet")
    main()

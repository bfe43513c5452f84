#!/usr/bin/env python3
"""Every shipped config (conf/*.conf, conf/examples/*.conf) passes `legate -t`
with an empty temporary prefix (plus the certificates of scripts/mkcert in
PREFIX/certs for a config that names certs/, as its comments tell users)."""
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
            text = open(path).read()
            for extra in ("blocklist.txt",):     # files an example names, shipped beside it
                if '"%s"' % extra in text:
                    shutil.copy(os.path.join(REPO, "conf", "examples", extra), prefix)
            if '"certs/' in text:
                subprocess.run(["sh", os.path.join(REPO, "scripts", "mkcert"),
                                os.path.join(prefix, "certs")], check=True,
                               capture_output=True, timeout=120)
            rc, out, err = run_legate(["-t", "-p", prefix, "-c", path], prefix=prefix)
            eq(rc, 0, "legate -t -p %s -c %s\n%s" % (prefix, path, err))
            contains(err, "legate: configuration file %s test is successful" % path)
            reports = [f for f in os.listdir(prefix) if f.startswith(("asan", "ubsan"))]
            eq(reports, [], "sanitizer reports")
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

#!/usr/bin/env python3
"""Every configuration example in legate.conf(5) passes `legate -t`.

The examples are the man page's .nf/.fi blocks.  A whole configuration is
checked as it is; a list of routes or a few settings is put into the
smallest configuration that can hold it; only the syntax outline at the
top (it shows <placeholders>) is not a configuration.  A block this test
cannot place fails it, so a new example cannot go untested."""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

MAN = os.path.join(REPO, "doc", "legate.conf.5")


def blocks():
    out, cur, line = [], None, 0
    for i, l in enumerate(open(MAN).read().splitlines(), 1):
        if l.startswith(".nf"):
            cur, line = [], i
        elif l.startswith(".fi") and cur is not None:
            out.append((line, cur))
            cur = None
        elif cur is not None:
            cur.append(l)
    return out


def unroff(lines):
    text = []
    for l in lines:
        if re.match(r"^\.(RS|RE|RI|IP|PP|TP)\b", l):
            continue
        l = l.replace("\\-", "-").replace("\\(dq", '"').replace("\\en", "\\n")
        l = re.sub(r"\\f[IBRP]", "", l)
        text.append(l)
    return "\n".join(text)


def check(text, what):
    rc, err = check_config(text)
    eq(rc, 0, "%s fails legate -t:\n%s\n--- the configuration:\n%s" % (what, err, text))


def server(routes, extra=""):
    return ('servers = ( { listen = "127.0.0.1:%d"; %s routes = ( %s ); } );'
            % (free_port(), extra, routes))


UPS = ('upstreams = { app = { servers = ( "127.0.0.1:9001" ); }; '
       'stable = { servers = ( "127.0.0.1:9002" ); }; canary = { servers = ( "127.0.0.1:9003" ); }; };')


@test
def every_example_passes_legate_t():
    tmp = tempfile.mkdtemp(prefix="legate-man-")
    key = os.path.join(tmp, "idp.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", key + ".priv"], check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "pkey", "-in", key + ".priv", "-pubout", "-out", key],
                   check=True, capture_output=True, timeout=60)
    found = blocks()
    ok(len(found) >= 4, "the man page's examples: %d" % len(found))
    checked = 0
    for line, raw in found:
        text = unroff(raw)
        what = "the example at legate.conf.5:%d" % line
        if "<" in text and ">" in text and "common settings" in text:
            continue                            # the syntax outline
        text = "\n".join(l for l in text.splitlines() if l.strip() != "...")
        # the shipped example certificates, wherever the check runs
        text = text.replace('"conf/examples/certs/', '"%s/conf/examples/certs/' % REPO)
        if re.search(r"^\s*stream\s*=\s*\{", text, re.M) and \
                not re.search(r"^\s*http\s*=\s*\{", text, re.M):
            check(text, what)                   # a whole configuration of stream servers
        elif re.search(r"^\s*http\s*=\s*\{", text, re.M):
            if "servers" not in text:           # settings of the http level only
                text = re.sub(r"\};\s*$", UPS + server('{ prefix = "/"; proxy_pass = "app"; }')
                              + "\n};", text.rstrip())
            check(text, what)
        elif re.match(r"^\s*routes\s*=", text):
            routes = re.sub(r"^\s*routes\s*=\s*\(", "", text.strip()).rstrip().rstrip(";").rstrip()
            routes = routes[:-1] if routes.endswith(")") else routes
            check("http = { %s %s };" % (UPS, server(routes)), what)
        elif re.search(r"^\s*[a-z_]+\s*=", text, re.M):
            text = re.sub(r'"/etc/legate/idp\.jwks"', '"%s"' % key, text)
            check("http = { %s %s };" % (UPS, server('{ prefix = "/"; proxy_pass = "app"; %s }'
                                                      % text)), what)
        else:
            fail("%s is not a configuration this test knows how to check:\n%s" % (what, text))
        checked += 1
    ok(checked >= 3, "examples checked: %d" % checked)


if __name__ == "__main__":
    main()

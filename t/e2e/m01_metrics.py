#!/usr/bin/env python3
"""Observability: Prometheus metrics, status.json and the HTML status page
(in headless Chromium), counted once across workers and reloads, with
label sets bounded by the configuration; $request_id and the upstream
timing variables."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def conf(port, mport, origin, http_extra="", global_extra=""):
    return """%s
http = {
  access_log = "logs/access.log";
  log_format = "$request_id|$upstream_connect_time|$upstream_header_time|$status";
  %s
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = (
    { listen = ( { address = "127.0.0.1:%d"; http2 = true; } );
      server_name = "www.example";
      routes = (
        { prefix = "/api/"; proxy_pass = "app";
          add_request_headers = { X-Request-ID = "$request_id"; }; },
        { prefix = "/"; proxy_pass = "app"; }
      ); },
    { listen = "127.0.0.1:%d";
      routes = (
        { exact = "/metrics"; status = "metrics"; },
        { exact = "/status.json"; status = "json"; },
        { exact = "/status"; status = "html"; }
      ); }
  );
};
""" % (global_extra, http_extra, origin.address, port, mport)


def scrape(mport):
    st, h, body = curl("http://127.0.0.1:%d/metrics" % mport)
    eq(st, 200)
    contains(h.get("Content-Type", ""), "text/plain; version=0.0.4")
    return body.decode()


def value(text, name, **labels):
    """The sample of name whose labels include these, or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name + "{"):
            continue
        if all('%s="%s"' % (k, v) in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@test
def requests_are_counted_once_across_workers_and_a_reload():
    with Origin("o1") as o:
        port, mport = free_port(), free_port()
        text = conf(port, mport, o)
        lg = Legate(text, workers=2)
        for _ in range(40):
            eq(request(port, "GET", "/a").status, 200)
        for _ in range(3):
            eq(request(port, "GET", "/a?status=503").status, 503)

        seen = {}

        def counted(n2, n5):
            # one page for every figure checked: another worker's page may be
            # up to the page interval behind this one
            t = scrape(mport)
            if (value(t, "legate_http_requests_total", server="www.example", route="/", code="2xx") == n2
                    and value(t, "legate_http_requests_total", server="www.example", route="/", code="5xx") == n5):
                seen["t"] = t
                return True
            return False
        wait_until(lambda: counted(40, 3), 10, what="40 2xx and 3 5xx counted")
        lg.reload(text.replace('log_format', 'keepalive_timeout = "30s";\n  log_format'))
        for _ in range(10):
            eq(request(port, "GET", "/a").status, 200)
        wait_until(lambda: counted(50, 3) and re.search(r"^legate_reloads_total 1$", seen["t"], re.M),
                   10, what="the counts kept across the reload, and the reload counted")
        t = seen["t"]
        # the histogram adds up
        cnt = value(t, "legate_http_request_duration_seconds_count", server="www.example", route="/")
        inf = value(t, "legate_http_request_duration_seconds_bucket", server="www.example", route="/", le="+Inf")
        eq((cnt, inf), (53.0, 53.0))
        ok(value(t, "legate_upstream_requests_total", upstream="app") >= 53, "upstream requests")
        eq(value(t, "legate_upstream_server_up", upstream="app"), 1.0)
        ok(value(t, "legate_connections_accepted_total", listener="127.0.0.1:%d" % port) >= 53,
           "connections accepted")


@test
def clients_cannot_grow_the_page():
    with Origin("o1") as o:
        port, mport = free_port(), free_port()
        lg = Legate(conf(port, mport, o), workers=1)
        eq(request(port, "GET", "/x").status, 200)
        wait_until(lambda: value(scrape(mport), "legate_http_requests_total", route="/", code="2xx") == 1, 10)
        before = len(scrape(mport).splitlines())
        for i in range(200):
            eq(request(port, "GET", "/p%d?q=%d" % (i, i), headers=[("X-Junk-%d" % i, "1")],
                       host="h%d.example" % i).status, 200)
        wait_until(lambda: value(scrape(mport), "legate_http_requests_total", route="/", code="2xx") == 201, 10)
        eq(len(scrape(mport).splitlines()), before, "lines on the page")


@test
def http2_streams_and_status_json():
    with Origin("o1") as o:
        port, mport = free_port(), free_port()
        lg = Legate(conf(port, mport, o), workers=1)
        for _ in range(5):
            st, _, _ = curl("--http2-prior-knowledge", "http://127.0.0.1:%d/h2" % port)
            eq(st, 200)
        wait_until(lambda: value(scrape(mport), "legate_http2_streams_total",
                                 listener="127.0.0.1:%d" % port) == 5, 10, what="5 HTTP/2 streams")
        t = scrape(mport)
        eq(value(t, "legate_http2_connections_total", listener="127.0.0.1:%d" % port), 5.0)
        st, h, body = curl("http://127.0.0.1:%d/status.json" % mport)
        eq(st, 200)
        d = json.loads(body)
        ok(d["requests"]["2xx"] >= 5, "2xx in status.json: %r" % d["requests"])
        eq([u["up"] for u in d["upstreams"]], [True])
        ok(any(s["server"] == "www.example" and s["route"] == "/" for s in d["series"]), "series")


@test
def request_id_reaches_the_upstream_and_the_log():
    with Origin("o1") as o:
        port, mport = free_port(), free_port()
        lg = Legate(conf(port, mport, o), workers=1)
        ids = []
        for _ in range(3):
            r = request(port, "GET", "/api/x?echo=1")
            eq(r.status, 200)
            hd = dict((k.lower(), v) for k, v in json.loads(r.body)["headers"])
            ids.append(hd.get("x-request-id"))
        for i in ids:
            ok(i is not None and re.fullmatch(r"[0-9a-f]{32}", i), "request id %r" % i)
        eq(len(set(ids)), 3, "distinct")

        def logged():
            try:
                return open(lg.access_log).read()
            except FileNotFoundError:
                return ""
        wait_until(lambda: len(logged().splitlines()) >= 3, 10)
        lines = logged().splitlines()
        for i, line in zip(ids, lines):
            rid, conn_t, head_t, st = line.split("|")
            eq((rid, st), (i, "200"))
            ok(re.fullmatch(r"\d+\.\d{3}", conn_t) and re.fullmatch(r"\d+\.\d{3}", head_t),
               "timings %r %r" % (conn_t, head_t))


@test
def logs_to_syslog_and_conditional_access_logging():
    """access_log and error_log = "syslog:server=...": RFC 5424 datagrams
    to a test listener; access_log_if skips the lines it says to."""
    import socket as so
    rx = so.socket(so.AF_INET, so.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(10)
    sport = rx.getsockname()[1]
    with Origin("o1") as o:
        port = free_port()
        text = """
error_log = "syslog:server=127.0.0.1:%d,facility=local3,tag=edge";
error_log_level = "info";
http = {
  access_log = "syslog:server=127.0.0.1:%d,tag=edge-access";
  access_log_if = "$arg_log";
  log_format = "$request $status";
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = ( { listen = "127.0.0.1:%d"; routes = ( { prefix = "/"; proxy_pass = "app"; } ); } );
};
""" % (sport, sport, o.address, port)
        lg = Legate(text, workers=1)
        eq(request(port, target="/quiet").status, 200)
        eq(request(port, target="/quiet?log=0").status, 200)
        eq(request(port, target="/loud?log=1").status, 200)
        got = []
        deadline = time.time() + 10
        while time.time() < deadline and not any(b"GET /loud?log=1" in g for g in got):
            try:
                got.append(rx.recv(65536))
            except so.timeout:
                break
        access = [g for g in got if b" edge-access " in g]
        ok(any(b"GET /loud?log=1 HTTP/1.1 200" in g for g in access), "the logged line: %r" % got)
        ok(not any(b"/quiet" in g for g in access), "skipped by access_log_if: %r" % access)
        line = [g for g in access if b"/loud" in g][0]
        ok(re.match(rb"<190>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ edge-access \d+ - - ", line),
           "RFC 5424, local7.info: %r" % line)
        # the error log's lines: local3 (19), and a notice at startup
        ok(any(re.match(rb"<\d+>1 \S+ \S+ edge \d+ - - \[", g) and
               int(re.match(rb"<(\d+)>", g).group(1)) // 8 == 19 for g in got),
           "error log lines as local3: %r" % got[:3])
    rx.close()
    rc, err = check_config(conf(free_port(), free_port(), Origin("o2")).replace(
        'access_log = "logs/access.log";', 'access_log = "syslog:server=nowhere.example";'))
    ok(rc != 0 and re.search(r"legate\.conf:\d+: 'access_log': syslog server", err), err)


@test
def traceparent_is_propagated_or_started():
    with Origin("o1") as o:
        port, mport = free_port(), free_port()
        text = conf(port, mport, o, http_extra="traceparent = true;").replace(
            '"$request_id|$upstream_connect_time|$upstream_header_time|$status"', '"$trace_id"')
        lg = Legate(text, workers=1)
        tid = "4bf92f3577b34da6a3ce929d0e0e4736"
        r = request(port, target="/x?echo=1",
                    headers=[("traceparent", "00-%s-00f067aa0ba902b7-01" % tid)])
        hd = dict((k.lower(), v) for k, v in r.json()["headers"])
        m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", hd.get("traceparent", ""))
        ok(m and m.group(1) == tid and m.group(2) != "00f067aa0ba902b7",
           "the trace kept, a new parent: %r" % hd.get("traceparent"))
        r = request(port, target="/y?echo=1", headers=[("traceparent", "garbage")])
        hd = dict((k.lower(), v) for k, v in r.json()["headers"])
        m2 = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", hd.get("traceparent", ""))
        ok(m2 and m2.group(1) != tid, "a new trace for an invalid header: %r" % hd)
        eq(sum(1 for k, _ in r.json()["headers"] if k.lower() == "traceparent"), 1)

        def lines():
            try:
                return open(lg.access_log).read().split()
            except FileNotFoundError:
                return []
        wait_until(lambda: len(lines()) >= 2, 10)
        eq(lines()[:2], [tid, m2.group(1)], "$trace_id in the log")


@test
def outcomes_cache_limits_codings_refusals():
    with Origin("o1") as o:
        port, mport = free_port(), free_port()
        text = conf(port, mport, o, global_extra='cache_size = "4m";',
                    http_extra='limit_req_zones = ( { name = "z"; key = "$remote_addr"; rate = "1r/m"; } );')
        text = text.replace('{ prefix = "/"; proxy_pass = "app"; }',
                            '{ prefix = "/c/"; proxy_pass = "app"; cache = true; cache_valid = "200 1m"; },'
                            '{ prefix = "/l/"; proxy_pass = "app"; limit_req = { zone = "z"; nodelay = true; }; },'
                            '{ prefix = "/z/"; proxy_pass = "app"; gzip = true; gzip_types = "text/plain"; },'
                            '{ prefix = "/deny/"; proxy_pass = "app"; access_rules = "deny all"; },'
                            '{ prefix = "/"; proxy_pass = "app"; }')
        lg = Legate(text, workers=1)
        for _ in range(3):
            eq(request(port, target="/c/a").status, 200)
        eq([request(port, target="/l/a").status for _ in range(3)], [200, 429, 429])
        eq(request(port, target="/z/a?size=5000&ctype=text/plain", headers=[("Accept-Encoding", "gzip")]).status, 200)
        eq(request(port, target="/deny/a").status, 403)

        def want():
            t = scrape(mport)
            return (value(t, "legate_cache_requests_total", status="MISS"),
                    value(t, "legate_cache_requests_total", status="HIT"),
                    value(t, "legate_limit_req_total", result="PASSED"),
                    value(t, "legate_limit_req_total", result="REJECTED"),
                    value(t, "legate_compressed_responses_total", coding="gzip"),
                    value(t, "legate_refused_requests_total", by="policy"))
        got = []
        wait_until(lambda: got.append(want()) or got[-1] == (1.0, 2.0, 1.0, 2.0, 1.0, 3.0), 10,
                   what="the outcomes counted")


@test
def upstream_servers_time_to_first_byte_connects_and_retries():
    with Origin("o1") as o:
        port, mport = free_port(), free_port()
        text = conf(port, mport, o).replace('upstreams = { app = { servers = ( "%s" ); }; };' % o.address,
            'upstreams = { app = { servers = ( "%s" ); keepalive = 8; }; };' % o.address)
        lg = Legate(text, workers=1)
        for _ in range(4):
            eq(request(port, target="/x?delay=30").status, 200)

        def sample():
            t = scrape(mport)
            return (value(t, "legate_upstream_header_duration_seconds_count", upstream="app"),
                    value(t, "legate_upstream_header_duration_seconds_bucket", upstream="app", le="0.025"),
                    value(t, "legate_upstream_connects_total", upstream="app"),
                    value(t, "legate_upstream_retries_total", upstream="app"))
        got = []
        wait_until(lambda: got.append(sample()) or got[-1][0] == 4.0, 10, what="4 answers counted")
        cnt, fast, conns, retries = got[-1]
        eq(fast, 0.0, "none answered within 25 ms (each waited 30)")
        eq(conns, 1.0, "one connection, reused for the rest")
        eq(retries, 0.0)


@test
def a_trusted_front_ends_request_id_is_kept():
    with Origin("o1") as o:
        port, mport = free_port(), free_port()
        text = conf(port, mport, o, http_extra='request_id_header = "X-Request-ID";').replace(
            'server_name = "www.example";', 'server_name = "www.example"; real_ip_from = [ "127.0.0.1" ];')
        Legate(text, workers=1)
        hd = lambda r: dict((k.lower(), v) for k, v in r.json()["headers"])
        r = request(port, target="/api/x?echo=1", headers=[("X-Request-ID", "edge-42.a_b")])
        eq(hd(r).get("x-request-id"), "edge-42.a_b", "kept from a trusted front end")
        r = request(port, target="/api/x?echo=1", headers=[("X-Request-ID", "bad id!")])
        ok(re.fullmatch(r"[0-9a-f]{32}", hd(r).get("x-request-id", "")), "not an ID: a new one")
    with Origin("o2") as o:
        port, mport = free_port(), free_port()
        Legate(conf(port, mport, o, http_extra='request_id_header = "X-Request-ID";'), workers=1)
        r = request(port, target="/api/x?echo=1", headers=[("X-Request-ID", "edge-42")])
        got = dict((k.lower(), v) for k, v in r.json()["headers"]).get("x-request-id", "")
        ok(re.fullmatch(r"[0-9a-f]{32}", got), "an untrusted client's is not taken: %r" % got)


@test
def legate_s_status_prints_the_running_figures():
    with Origin("o1") as o:
        port, mport = free_port(), free_port()
        lg = Legate(conf(port, mport, o), workers=1)
        for _ in range(3):
            eq(request(port, target="/s").status, 200)

        def out():
            p = subprocess.run([LEGATE_BIN, "-s", "status", "-p", lg.prefix, "-c", lg.conf_path],
                               capture_output=True, timeout=20)
            return p.returncode, p.stdout.decode()
        got = []
        wait_until(lambda: got.append(out()) or "2xx 3," in got[-1][1], 10, what="3 requests shown")
        rc, text = got[-1]
        eq(rc, 0)
        contains(text, "legate ")
        contains(text, "upstream app server %s: up" % o.address)
        lg.stop()
    p = subprocess.run([LEGATE_BIN, "-s", "status", "-p", lg.prefix, "-c", lg.conf_path],
                       capture_output=True, timeout=20)
    ok(p.returncode != 0, "legate is gone: a failure")


@test
def openmetrics_when_asked_by_accept():
    with Origin("o1") as o:
        port, mport = free_port(), free_port()
        Legate(conf(port, mport, o), workers=1)
        eq(request(port, target="/a").status, 200)
        st, h, body = curl("-H", "Accept: application/openmetrics-text; version=1.0.0,text/plain;q=0.5",
                           "http://127.0.0.1:%d/metrics" % mport)
        eq(st, 200)
        contains(h.get("Content-Type", ""), "application/openmetrics-text; version=1.0.0")
        text = body.decode()
        ok(text.endswith("# EOF\n"), "ends with # EOF")
        contains(text, "# TYPE legate_http_requests counter\n")
        ok("# TYPE legate_http_requests_total" not in text, "counter families without _total")
        contains(text, "legate_http_requests_total{")
        st, h, body = curl("http://127.0.0.1:%d/metrics" % mport)
        contains(h.get("Content-Type", ""), "text/plain; version=0.0.4")
        ok(b"# EOF" not in body, "the Prometheus text otherwise")


@test
def idle_keepalive_connections_are_a_gauge():
    import socket as so
    with Origin("o1") as o:
        port, mport = free_port(), free_port()
        Legate(conf(port, mport, o), workers=1)
        socks = []
        for _ in range(3):
            s = so.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            socks.append(s)
        lab = 'listener="127.0.0.1:%d"' % port
        wait_until(lambda: value(scrape(mport), "legate_connections_idle", listener="127.0.0.1:%d" % port) == 3,
                   10, what="3 idle keep-alive connections")
        for s in socks:
            s.close()
        wait_until(lambda: value(scrape(mport), "legate_connections_idle", listener="127.0.0.1:%d" % port) == 0,
                   10, what="none idle once they closed")


@test
def bad_buckets_are_a_config_error():
    rc, err = check_config(conf(free_port(), free_port(), Origin("o1"),
                                global_extra='metrics_buckets = [ "1s", "10ms" ];'))
    ok(rc != 0, "rejected")
    contains(err, "metrics_buckets")
    contains(err, "legate.conf:1:")


@test(timeout=150)
def status_page_draws_in_chromium():
    if CHROMIUM is None:
        skip("chromium not installed (scripts/bootstrap installs it)")
    with Origin("o1") as o:
        port, mport = free_port(), free_port()
        lg = Legate(conf(port, mport, o), workers=1)
        st, h, body = curl("http://127.0.0.1:%d/status" % mport)
        eq(st, 200)
        contains(h.get("Content-Type", ""), "text/html")
        ok(b"src=" not in body and b"href=" not in body, "no external resources")
        for _ in range(30):
            request(port, "GET", "/t")
        d = tempfile.mkdtemp(prefix="legate-chromium-status-")
        dom = ""
        try:
            for attempt in range(3):
                cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                       "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                       "--disable-background-networking", "--disable-component-update",
                       "--user-data-dir=" + os.path.join(d, "p%d" % attempt),
                       "--virtual-time-budget=4000", "--dump-dom",
                       "http://127.0.0.1:%d/status" % mport]
                p = subprocess.run(cmd, capture_output=True, timeout=40, stdin=subprocess.DEVNULL)
                dom = p.stdout.decode(errors="replace")
                if "<polyline" in dom and "127.0.0.1" in dom:
                    break
        finally:
            shutil.rmtree(d, ignore_errors=True)
        contains(dom, "<polyline", "a chart was drawn")
        ok(re.search(r"requests (\d+)", dom) and int(re.search(r"requests (\d+)", dom).group(1)) >= 30,
           "the summary counts the traffic: %r" % re.findall(r"requests \d+[^<]*", dom))
        contains(dom, '<td class="up">up</td>', "the upstream server's state")
        ok(re.search(r'id="pct">\d+ / \d+ / \d+ ms<', dom), "latency percentiles shown")
        contains(dom, "configuration loaded ")
        # a screenshot, kept as the test's artifact (LEGATE_TEST_ARTIFACTS, or the prefix)
        art = os.environ.get("LEGATE_TEST_ARTIFACTS") or lg.prefix
        os.makedirs(art, exist_ok=True)
        shot = os.path.join(art, "status-page.png")
        d2 = tempfile.mkdtemp(prefix="legate-chromium-shot-")
        try:
            subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--no-first-run", "--user-data-dir=" + d2,
                            "--virtual-time-budget=3000", "--window-size=1000,700",
                            "--screenshot=" + shot, "http://127.0.0.1:%d/status" % mport],
                           capture_output=True, timeout=40, stdin=subprocess.DEVNULL)
        finally:
            shutil.rmtree(d2, ignore_errors=True)
        ok(os.path.exists(shot) and os.path.getsize(shot) > 1000, "a screenshot at %s" % shot)
        print("# status page screenshot: %s" % shot)
        with open(os.path.join(art, "status-dom.html"), "w") as f:
            f.write(dom)


@test
def shipped_observability_example():
    """conf/examples/observability.conf, on free ports instead of 8080, 9001, 9145."""
    with Origin("o1") as o:
        text = open(os.path.join(REPO, "conf", "examples", "observability.conf")).read()
        for a in ("127.0.0.1:8080", "127.0.0.1:9001", "127.0.0.1:9145"):
            ok(a in text, "the example's address " + a)
        port, mport = free_port(), free_port()
        text = (text.replace("127.0.0.1:8080", "127.0.0.1:%d" % port).replace("127.0.0.1:9001", o.address)
                .replace("127.0.0.1:9145", "127.0.0.1:%d" % mport)
                .replace('worker_processes = "auto";', "worker_processes = 2;"))
        lg = Legate(text)
        r = request(port, "GET", "/e?echo=1")
        eq(r.status, 200)
        rid = dict((k.lower(), v) for k, v in json.loads(r.body)["headers"]).get("x-request-id")
        ok(rid and re.fullmatch(r"[0-9a-f]{32}", rid), "X-Request-ID %r" % rid)
        wait_until(lambda: value(scrape(mport), "legate_http_requests_total", route="/", code="2xx") == 1,
                   10, what="the request counted")
        st, _, body = curl("http://127.0.0.1:%d/status.json" % mport)
        eq(st, 200)
        json.loads(body)


if __name__ == "__main__":
    main()

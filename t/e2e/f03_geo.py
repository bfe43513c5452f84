#!/usr/bin/env python3
"""Geofencing: the client's country from a MaxMind MMDB (written here with
MaxMind::DB::Writer) or from GeoLite2 CSV files; the forward proxy's
allow_countries / deny_countries, the route condition `countries`, the
$geo_country variable; real_ip_from / real_ip_header taking the client's
address from a trusted load balancer, per request on a keep-alive
connection; the errors a bad database gives; a reload picks up a new one.

Clients pick their source address on loopback (127.0.0.2 = FR,
127.0.0.3 = DE, 127.0.0.1 = unknown; 203.0.113.0/24 = JP)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
from legate_test import _track  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MKMMDB = os.path.join(HERE, "..", "mkmmdb.pl")
COUNTRIES = ["127.0.0.2/32=FR", "127.0.0.3/32=DE", "203.0.113.0/24=JP"]


class GeoDir:
    """A temp dir holding test.mmdb and the equivalent CSV pair."""

    def __init__(self, pairs=COUNTRIES):
        self.dir = tempfile.mkdtemp(prefix="legate-geo-")
        self.mmdb = os.path.join(self.dir, "test.mmdb")
        self.write_mmdb(pairs)
        ids = {"FR": 3017382, "DE": 2921044, "JP": 1861060}
        self.locations = os.path.join(self.dir, "locations.csv")
        with open(self.locations, "w") as f:
            f.write("geoname_id,locale_code,continent_code,continent_name,"
                    "country_iso_code,country_name,is_in_european_union\n")
            f.write('3017382,en,EU,Europe,FR,France,1\n')
            f.write('2921044,en,EU,Europe,DE,Germany,1\n')
            f.write('1861060,en,AS,Asia,JP,Japan,0\n')
        self.blocks = os.path.join(self.dir, "blocks.csv")
        with open(self.blocks, "w") as f:
            f.write("network,geoname_id,registered_country_geoname_id,"
                    "represented_country_geoname_id,is_anonymous_proxy,"
                    "is_satellite_provider\n")
            for p in pairs:
                net, cc = p.split("=")
                # the DE line has only a registered country: the fallback column
                if cc == "DE":
                    f.write("%s,,%d,,0,0\n" % (net, ids[cc]))
                else:
                    f.write("%s,%d,%d,,0,0\n" % (net, ids[cc], ids[cc]))
        _track(self)

    def write_mmdb(self, pairs):
        p = subprocess.run(["perl", MKMMDB, self.mmdb] + list(pairs),
                           capture_output=True, timeout=60)
        ok(p.returncode == 0, "mkmmdb.pl: %s" % p.stderr.decode(errors="replace"))

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def from_(addr, port, target="/", headers=(), host="localhost"):
    with Conn(port, source=addr) as c:
        return c.request("GET", target, headers, host=host)


def reverse_conf(port, o, geo_global, server_extra=""):
    return """
%s
http = {
  upstreams = { app = { servers = ( "%s" ); }; };
  servers = ( {
    listen = "127.0.0.1:%d";
    %s
    routes = (
      { prefix = "/"; countries = [ "FR", "JP" ]; return = 200;
        body = "bonjour from $geo_country to $remote_addr via $realip_remote_addr\\n"; },
      { prefix = "/"; proxy_pass = "app";
        add_request_headers = { X-Country = "$geo_country"; }; }
    );
  } );
};
""" % (geo_global, o.address, port, server_extra)


def check_reverse(port, o):
    r = from_("127.0.0.2", port, "/x")
    eq(r.status, 200)
    contains(r.body.decode(), "bonjour from FR to 127.0.0.2", "the FR route")
    r = from_("127.0.0.3", port, "/x?echo=1")
    eq(r.status, 200)
    h = dict(r.json()["headers"])
    eq(h.get("X-Country"), "DE", "$geo_country in a header sent upstream")
    r = from_("127.0.0.1", port, "/x?echo=1")
    eq(dict(r.json()["headers"]).get("X-Country"), "", "an unknown address has no country")


@test
def route_countries_and_variable_from_mmdb():
    g = GeoDir()
    o = Origin("o")
    port = free_port()
    Legate(reverse_conf(port, o, 'geoip_mmdb = "%s";' % g.mmdb), workers=2)
    check_reverse(port, o)


@test
def the_same_from_geolite2_csv_files():
    g = GeoDir()
    o = Origin("o")
    port = free_port()
    Legate(reverse_conf(port, o, 'geoip_csv_blocks = [ "%s" ];\ngeoip_csv_locations = "%s";'
                        % (g.blocks, g.locations)), workers=1)
    check_reverse(port, o)


def fwd_conf(port, forward_extra):
    return """
http = { servers = ( { listen = "127.0.0.1:%d";
    forward = { allow_private = true; %s };
    routes = ( { exact = "/"; return = 200; body = "proxy\\n"; } ); } ); };
""" % (port, forward_extra)


def via_from(addr, proxy_port, origin):
    with Conn(proxy_port, source=addr) as c:
        return c.request("GET", "http://%s/geo" % origin.address, host=origin.address)


@test
def forward_allow_and_deny_countries():
    g = GeoDir()
    o = Origin("o")
    port = free_port()
    Legate('geoip_mmdb = "%s";\n' % g.mmdb +
           fwd_conf(port, 'allow_countries = [ "FR", "JP" ];'), workers=2)
    eq(via_from("127.0.0.2", port, o).status, 200, "FR is allowed")
    r = via_from("127.0.0.3", port, o)
    eq(r.status, 403, "DE is not")
    contains(r.body.decode(), "(DE) is not in allow_countries")
    r = via_from("127.0.0.1", port, o)
    eq(r.status, 403, "nor an address of no known country")
    contains(r.body.decode(), "(unknown)")
    port2 = free_port()
    Legate('geoip_mmdb = "%s";\n' % g.mmdb + fwd_conf(port2, 'deny_countries = [ "DE" ];'),
           workers=1)
    r = via_from("127.0.0.3", port2, o)
    eq(r.status, 403)
    contains(r.body.decode(), "DE are in deny_countries")
    eq(via_from("127.0.0.1", port2, o).status, 200, "unknown is not denied")
    eq(via_from("127.0.0.2", port2, o).status, 200)
    eq(o.stats()["by_path"].get("/geo", 0), 3, "refused requests never reach the origin")


@test
def real_ip_from_a_trusted_load_balancer():
    g = GeoDir()
    o = Origin("o")
    port = free_port()
    lg = Legate(reverse_conf(port, o, 'geoip_mmdb = "%s";' % g.mmdb,
                             'real_ip_from = [ "127.0.0.1", "10.0.0.0/8" ];'), workers=1)
    # the balancer (127.0.0.1) carries two clients on one keep-alive connection
    with Conn(port, source="127.0.0.1") as c:
        r = c.request("GET", "/a", [("X-Forwarded-For", "203.0.113.7")])
        eq(r.status, 200)
        contains(r.body.decode(), "bonjour from JP to 203.0.113.7 via 127.0.0.1")
        r = c.request("GET", "/b?echo=1", [("X-Forwarded-For", "127.0.0.3, 10.1.2.3")])
        h = dict(r.json()["headers"])
        eq(h.get("X-Country"), "DE", "rightmost untrusted address; 10.1.2.3 is trusted")
        eq(h.get("X-Forwarded-For"), "127.0.0.3, 10.1.2.3, 127.0.0.1",
           "the hop appended is the balancer, not the client again")
        r = c.request("GET", "/c?echo=1")
        eq(dict(r.json()["headers"]).get("X-Country"), "",
           "no header on the next request: the connection's own address again")
        r = c.request("GET", "/d?echo=1", [("X-Forwarded-For", "not-an-address")])
        eq(dict(r.json()["headers"]).get("X-Country"), "", "garbage is ignored")
        # a balancer that adds its own line: the client's own claim comes first
        r = c.request("GET", "/f", [("X-Forwarded-For", "127.0.0.3"),
                                    ("X-Forwarded-For", "203.0.113.8")])
        contains(r.body.decode(), "bonjour from JP to 203.0.113.8",
                 "the last line is the balancer's: the client cannot choose its address")
    # an untrusted client cannot claim another address
    r = from_("127.0.0.2", port, "/e", [("X-Forwarded-For", "127.0.0.3")])
    contains(r.body.decode(), "bonjour from FR to 127.0.0.2")
    wait_until(lambda: os.path.exists(lg.access_log) and
               "203.0.113.7 - " in open(lg.access_log).read(),
               what="the access log to name the real client")


@test
def real_ip_header_can_be_another_header():
    g = GeoDir()
    o = Origin("o")
    port = free_port()
    Legate(reverse_conf(port, o, 'geoip_mmdb = "%s";' % g.mmdb,
                        'real_ip_from = "127.0.0.0/8"; real_ip_header = "CF-Connecting-IP";'),
           workers=1)
    r = from_("127.0.0.3", port, "/a", [("CF-Connecting-IP", "127.0.0.2"),
                                         ("X-Forwarded-For", "127.0.0.3")])
    contains(r.body.decode(), "bonjour from FR to 127.0.0.2 via 127.0.0.3")


@test
def country_of_the_proxy_protocol_source():
    g = GeoDir()
    o = Origin("o")
    port = free_port()
    conf = reverse_conf(port, o, 'geoip_mmdb = "%s";' % g.mmdb).replace(
        'listen = "127.0.0.1:%d";' % port,
        'listen = ( { address = "127.0.0.1:%d"; proxy_protocol = true; } );' % port)
    Legate(conf, workers=1)
    with Conn(port) as c:
        c.send("PROXY TCP4 203.0.113.9 127.0.0.1 40000 %d\r\n" % port)
        r = c.request("GET", "/p")
    contains(r.body.decode(), "bonjour from JP to 203.0.113.9")


@test
def reload_picks_up_a_new_database():
    g = GeoDir()
    o = Origin("o")
    port = free_port()
    lg = Legate(reverse_conf(port, o, 'geoip_mmdb = "%s";' % g.mmdb), workers=1)
    eq(from_("127.0.0.3", port, "/x").status, 200)
    contains(from_("127.0.0.3", port, "/x?echo=1").body.decode(), '"DE"')
    # the monthly update: 127.0.0.3 moves to JP; write beside and rename in
    g.write_mmdb(["127.0.0.2/32=FR", "127.0.0.3/32=JP"])
    lg.reload()
    contains(from_("127.0.0.3", port, "/x").body.decode(), "bonjour from JP")
    # a broken database is refused and the old one keeps serving
    with open(g.mmdb + ".bad", "wb") as f:
        f.write(b"this is not a maxmind database" * 10)
    lg.allow_log(r"geoip")
    lg.reload(reverse_conf(port, o, 'geoip_mmdb = "%s.bad";' % g.mmdb), expect_ok=False)
    contains(from_("127.0.0.3", port, "/x").body.decode(), "bonjour from JP")


MINIMAL = ('http = { servers = ( { listen = "127.0.0.1:1"; '
           'routes = ( { prefix = "/"; return = 200; } ); } ); };\n')


@test
def config_errors_name_file_and_line():
    g = GeoDir()
    rc, err = check_config('geoip_mmdb = "/nonexistent/x.mmdb";\n' + MINIMAL)
    eq(rc, 1)
    contains(err, "legate.conf:1: geoip: /nonexistent/x.mmdb")
    bad = os.path.join(g.dir, "bad.mmdb")
    with open(bad, "wb") as f:
        f.write(b"\0" * 4096)
    rc, err = check_config('\n\ngeoip_mmdb = "%s";\n' % bad + MINIMAL)
    eq(rc, 1)
    contains(err, "legate.conf:3: geoip: %s" % bad)
    rc, err = check_config('geoip_csv_blocks = [ "%s" ];\n' % g.blocks + MINIMAL)
    eq(rc, 1)
    contains(err, "needs 'geoip_csv_locations'")
    rc, err = check_config('http = { servers = ( { listen = "127.0.0.1:1";\n'
                           'routes = ( { prefix = "/"; countries = [ "fr" ]; return = 200; } ); } ); };\n')
    eq(rc, 1)
    contains(err, "legate.conf:2: 'fr' is not an upper-case ISO 3166 country code")
    rc, err = check_config('http = { servers = ( { listen = "127.0.0.1:1";\n'
                           'forward = { deny_countries = [ "DE", "jp" ]; };\n'
                           'routes = ( ); } ); };\n')
    eq(rc, 1, "the forward proxy's lists are checked the same way")
    contains(err, "legate.conf:2: 'jp' is not an upper-case ISO 3166 country code")
    rc, err = check_config('http = { servers = ( { listen = "127.0.0.1:1";\n'
                           'real_ip_from = [ "300.1.1.1" ];\n'
                           'routes = ( { prefix = "/"; return = 200; } ); } ); };\n')
    eq(rc, 1)
    contains(err, "legate.conf:1:")
    contains(err, "300.1.1.1")
    rc, err = check_config('geoip_mmdb = "%s";\n' % g.mmdb +
                           'http = { servers = ( { listen = "127.0.0.1:1";\n'
                           'routes = ( { prefix = "/"; countries = "FR"; return = 200; } ); } ); };\n')
    eq(rc, 0, err)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""JSON Web Tokens (auth_jwt): HS256 made here with hmac, RS256 / ES256 /
Ed25519 signed by the openssl command line; valid, expired, not yet valid,
wrong signature, wrong alg (RS/HS confusion), alg none, wrong iss/aud, kid
selection from a JWKS, the cookie source, a claim in a proxied header,
and bad key files refused by legate -t with FILE:LINE."""
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403

SECRET = b"0123456789abcdef0123456789abcdef"


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def run(*cmd, data=None):
    return subprocess.run(cmd, input=data, capture_output=True, check=True, timeout=60).stdout


def signing_input(header, claims):
    return (b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())).encode()


def hs256(claims, header=None, secret=SECRET):
    h = header or {"alg": "HS256", "typ": "JWT"}
    si = signing_input(h, claims)
    return si.decode() + "." + b64u(hmac.new(secret, si, hashlib.sha256).digest())


def der_to_raw(der):
    """ECDSA-Sig-Value (DER SEQUENCE of two INTEGERs) -> JWS r||s, 32 bytes each."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n]
        out += v.lstrip(b"\0").rjust(32, b"\0")
        i += 2 + n
    return out


def sign_pkey(kind, key, claims, kid=None):
    alg = {"rsa": "RS256", "ec": "ES256", "ed": "EdDSA"}[kind]
    h = {"alg": alg}
    if kid:
        h["kid"] = kid
    si = signing_input(h, claims)
    if kind == "ed":
        d = tempfile.mkdtemp(prefix="legate-jwt-")
        p = os.path.join(d, "in")
        with open(p, "wb") as f:
            f.write(si)
        sig = run("openssl", "pkeyutl", "-sign", "-rawin", "-inkey", key, "-in", p)
    else:
        sig = run("openssl", "dgst", "-sha256", "-sign", key, data=si)
        if kind == "ec":
            sig = der_to_raw(sig)
    return si.decode() + "." + b64u(sig)


class Keys:
    """Key pairs made once: PEM private and public files per kind."""
    def __init__(self):
        self.d = tempfile.mkdtemp(prefix="legate-jwt-")
        self.priv, self.pub = {}, {}
        for kind, args in (("rsa", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
                           ("ec", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                           ("ed", ["-algorithm", "ED25519"])):
            self.priv[kind] = os.path.join(self.d, kind + ".key")
            self.pub[kind] = os.path.join(self.d, kind + ".pub")
            run("openssl", "genpkey", *args, "-out", self.priv[kind])
            run("openssl", "pkey", "-in", self.priv[kind], "-pubout", "-out", self.pub[kind])
        self.secret = self.file("hs.secret", SECRET + b"\n")

    def file(self, name, data):
        p = os.path.join(self.d, name)
        with open(p, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        return p

    def jwk(self, kind, kid):
        """The public key as a JWK, from openssl's text dump of it."""
        txt = run("openssl", "pkey", "-pubin", "-in", self.pub[kind], "-noout", "-text").decode()
        def hexblock(label):
            m = re.search(label + r":\s*\n((?:\s+[0-9a-f:]+\n)+)", txt)
            return bytes.fromhex(re.sub(r"[\s:]", "", m.group(1)))
        if kind == "rsa":
            n = hexblock("Modulus").lstrip(b"\0")
            e = int(re.search(r"Exponent: (\d+)", txt).group(1))
            return {"kty": "RSA", "kid": kid, "n": b64u(n),
                    "e": b64u(e.to_bytes((e.bit_length() + 7) // 8, "big"))}
        if kind == "ec":
            pt = hexblock("pub")
            return {"kty": "EC", "crv": "P-256", "kid": kid, "x": b64u(pt[1:33]), "y": b64u(pt[33:65])}
        return {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64u(hexblock("pub"))}


KEYS = None


def keys():
    global KEYS
    if KEYS is None:
        KEYS = Keys()
    return KEYS


def claims(**kw):
    c = {"sub": "alice", "exp": int(time.time()) + 600}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


def get(port, token=None, target="/x?echo=1", cookie=None):
    hs = []
    if token is not None:
        hs.append(("Authorization", "Bearer " + token))
    if cookie is not None:
        hs.append(("Cookie", cookie))
    return request(port, target=target, headers=hs)


def proxy(extra, origin):
    return Legate(simple_conf(free_port(), [origin], route_extra=extra,
                              http_extra='log_format = "$status [$blocked]";'))


def access_log_has(lg, text, timeout=5):
    """The reason of a refusal, as $blocked writes it in the access log."""
    wait_until(lambda: os.path.exists(lg.access_log) and text in open(lg.access_log).read(),
               timeout, what="%r in the access log" % text)


@test
def hs256_valid_expired_nbf_and_forgeries():
    k = keys()
    with Origin("o") as o:
        lg = proxy('auth_jwt = "api"; auth_jwt_secret_file = "%s"; auth_jwt_leeway = "10s";'
                   'add_request_headers = { X-User = "$jwt_claim_sub"; X-N = "$jwt_claim_n"; };'
                   % k.secret, o)
        r = get(lg.port, hs256(claims(n=42)))
        eq(r.status, 200)
        seen = {a.lower(): b for a, b in r.json()["headers"]}
        eq(seen.get("x-user"), "alice", "$jwt_claim_sub in a proxied header")
        eq(seen.get("x-n"), "42", "a number claim as written")
        r = get(lg.port, hs256(claims(sub="eve\r\nX-Admin: 1")))
        eq(r.status, 200)
        seen = {a.lower(): b for a, b in r.json()["headers"]}
        ok("x-admin" not in seen, "a claim with CR LF does not split a header")
        ok(seen.get("x-user") in (None, ""), "and is left out: %r" % seen.get("x-user"))
        r = get(lg.port)
        eq(r.status, 401)
        eq(r.headers.get("WWW-Authenticate"), 'Bearer realm="api"')
        now = int(time.time())
        cases = [
            ("expired", hs256(claims(exp=now - 30)), "token expired"),
            ("inside the leeway", hs256(claims(exp=now - 2)), None),
            ("not yet valid", hs256(claims(nbf=now + 60)), "token not yet valid"),
            ("wrong secret", hs256(claims(), secret=b"x" * 32), "bad signature"),
            ("alg none", hs256(claims(), header={"alg": "none"}).rsplit(".", 1)[0] + ".",
             'algorithm none not accepted'),
            ("RS256 header on an HS key", hs256(claims(), header={"alg": "RS256"}),
             "no key for the token's alg"),
            ("garbage", "abc.def", "not three dot-separated parts"),
            ("exp a string", hs256(claims(exp="soon")), 'exp is not a number'),
        ]
        for name, tok, why in cases:
            r = get(lg.port, tok)
            if why is None:
                eq(r.status, 200, name)
                continue
            eq(r.status, 401, name)
            eq(r.headers.get("WWW-Authenticate"), 'Bearer realm="api", error="invalid_token"', name)
            access_log_has(lg, "401 [auth_jwt: " + why + "]")


@test
def public_keys_pem_each_alg_and_no_confusion():
    k = keys()
    with Origin("o") as o:
        for kind in ("rsa", "ec", "ed"):
            lg = proxy('auth_jwt = "api"; auth_jwt_key_file = "%s";' % k.pub[kind], o)
            eq(get(lg.port, sign_pkey(kind, k.priv[kind], claims())).status, 200, kind)
            tok = sign_pkey(kind, k.priv[kind], claims())
            h, p, s = tok.split(".")
            bad = h + "." + b64u(json.dumps(claims(sub="mallory")).encode()) + "." + s
            eq(get(lg.port, bad).status, 401, kind + ": payload changed")
            # the classic confusion: the public key's PEM bytes used as an HMAC secret
            with open(k.pub[kind], "rb") as f:
                pem = f.read()
            forged = hs256(claims(), secret=pem)
            eq(get(lg.port, forged).status, 401, kind + ": HS256 with the public key as secret")
            lg.stop()


@test
def jwks_kid_selection_and_cookie():
    k = keys()
    other = Keys()
    jwks = {"keys": [k.jwk("rsa", "r1"), other.jwk("rsa", "r2"), k.jwk("ec", "e1"),
                     k.jwk("ed", "d1"), {"kty": "oct", "kid": "h1", "k": b64u(SECRET)}]}
    path = k.file("keys.jwks", json.dumps(jwks))
    with Origin("o") as o:
        lg = proxy('auth_jwt = "api"; auth_jwt_key_file = "%s"; auth_jwt_cookie = "tok";' % path, o)
        for kind, kid in (("rsa", "r1"), ("ec", "e1"), ("ed", "d1")):
            eq(get(lg.port, cookie="tok=" + sign_pkey(kind, k.priv[kind], claims(), kid)).status,
               200, kid)
        eq(get(lg.port, cookie="tok=" + sign_pkey("rsa", other.priv["rsa"], claims(), "r2")).status,
           200, "the second RSA key by its kid")
        eq(get(lg.port, cookie="tok=" + sign_pkey("rsa", k.priv["rsa"], claims(), "r2")).status,
           401, "signed by r1 but naming r2")
        eq(get(lg.port, cookie="tok=" + sign_pkey("rsa", k.priv["rsa"], claims(), "zz")).status,
           401, "unknown kid")
        eq(get(lg.port, cookie="tok=" + hs256(claims(), header={"alg": "HS256", "kid": "h1"})).status,
           200, "an oct key")
        eq(get(lg.port, token=sign_pkey("rsa", k.priv["rsa"], claims(), "r1")).status, 401,
           "with auth_jwt_cookie the Authorization header is not read")


@test
def issuer_and_audience():
    k = keys()
    with Origin("o") as o:
        lg = proxy('auth_jwt = "api"; auth_jwt_secret_file = "%s"; auth_jwt_issuer = "https://idp";'
                   'auth_jwt_audience = "shop";' % k.secret, o)
        eq(get(lg.port, hs256(claims(iss="https://idp", aud="shop"))).status, 200)
        eq(get(lg.port, hs256(claims(iss="https://idp", aud=["x", "shop"]))).status, 200,
           "aud as an array")
        eq(get(lg.port, hs256(claims(iss="https://evil", aud="shop"))).status, 401, "wrong iss")
        eq(get(lg.port, hs256(claims(iss="https://idp", aud=["x"]))).status, 401, "wrong aud")
        eq(get(lg.port, hs256(claims(aud="shop"))).status, 401, "no iss")
        access_log_has(lg, "401 [auth_jwt: wrong audience]")


@test
def inherited_from_server_and_off_in_a_route():
    k = keys()
    with Origin("o") as o:
        routes = ('{ prefix = "/open/"; proxy_pass = "app"; auth_jwt = "off"; },'
                  '{ prefix = "/"; proxy_pass = "app"; }')
        lg = Legate(simple_conf(free_port(), [o], routes=routes,
                                server_extra='auth_jwt = "api"; auth_jwt_secret_file = "%s";'
                                % k.secret))
        eq(get(lg.port, target="/x").status, 401)
        eq(get(lg.port, hs256(claims()), target="/x").status, 200)
        eq(get(lg.port, target="/open/x").status, 200)


@test
def satisfy_any_lets_an_address_a_password_or_a_token_in():
    """satisfy = "any" across access_rules, auth_basic and auth_jwt: one
    passing check is enough; none gives a 401 offering Basic and Bearer.
    satisfy = "all": each must pass."""
    k = keys()
    d = tempfile.mkdtemp(prefix="legate-jwt-any-")
    h = run("openssl", "passwd", "-6", "pw").decode().strip()
    with open(os.path.join(d, "htpasswd"), "w") as f:
        f.write("bob:%s\n" % h)
    basic = [("Authorization", "Basic " + base64.b64encode(b"bob:pw").decode())]
    with Origin("o") as o:
        jwt = 'auth_jwt = "api"; auth_jwt_secret_file = "%s";' % k.secret
        routes = ('{ prefix = "/any-net/"; proxy_pass = "app"; satisfy = "any"; %s '
                  'access_rules = [ "allow 127.0.0.1" ]; },'
                  '{ prefix = "/any/"; proxy_pass = "app"; satisfy = "any"; %s '
                  'access_rules = [ "deny all" ]; auth_basic = "site"; auth_basic_user_file = "%s/htpasswd"; },'
                  '{ prefix = "/all/"; proxy_pass = "app"; satisfy = "all"; %s '
                  'access_rules = [ "deny all" ]; }') % (jwt, jwt, d, jwt)
        lg = Legate(simple_conf(free_port(), [o], routes=routes))
        eq(get(lg.port, target="/any-net/x").status, 200, "an allowed address, no token")
        eq(get(lg.port, hs256(claims()), target="/any/x").status, 200, "a token, address denied")
        eq(request(lg.port, target="/any/x", headers=basic).status, 200, "a password instead")
        r = get(lg.port, target="/any/x")
        eq(r.status, 401, "nothing that passes")
        raw = r.raw.decode(errors="replace")
        contains(raw, 'Basic realm="site"')
        contains(raw, 'Bearer realm="api"')
        eq(get(lg.port, hs256(claims(), secret=b"x" * 32), target="/any/x").status, 401, "a forged token")
        eq(get(lg.port, hs256(claims()), target="/all/x").status, 403, "all: the address must pass too")


@test
def bad_key_files_refused_with_file_line():
    k = keys()
    bad = {
        "not a key": k.file("bad.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
        "bad json": k.file("bad.jwks", '{"keys": [ {"kty": "RSA", } ]}'),
        "dup": k.file("dup.jwks", '{"keys": [], "keys": []}'),
        "ec off curve": k.file("ec.jwks", json.dumps({"keys": [
            {"kty": "EC", "crv": "P-256", "x": b64u(b"\1" * 32), "y": b64u(b"\2" * 32)}]})),
        "alg mismatch": k.file("alg.jwks", json.dumps({"keys": [dict(k.jwk("ed", "d"), alg="RS256")]})),
        "short secret": k.file("short.secret", "tiny\n"),
        "missing": os.path.join(k.d, "nope"),
    }
    for name, path in bad.items():
        key = "auth_jwt_secret_file" if "secret" in name else "auth_jwt_key_file"
        rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:9"],
                                           route_extra='auth_jwt = "a"; %s = "%s";' % (key, path)))
        ok(rc != 0, name)
        ok(re.search(re.escape(check_config.last_path) + r":\d+: '%s' " % key, err), name + ": " + err)
    rc, err = check_config(simple_conf(free_port(), ["127.0.0.1:9"], route_extra='auth_jwt = "a";'))
    ok(rc != 0)
    ok("needs 'auth_jwt_key_file'" in err, err)


@test
def reload_with_a_bad_key_keeps_the_old_config():
    k = keys()
    with Origin("o") as o:
        port = free_port()
        lg = Legate(simple_conf(port, [o], route_extra='auth_jwt = "api"; auth_jwt_secret_file = "%s";'
                                % k.secret))
        badp = k.file("bad2.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
        lg.allow_log(r"auth_jwt_key_file|reload failed")
        lg.reload(simple_conf(port, [o], route_extra='auth_jwt = "api"; auth_jwt_key_file = "%s";'
                              % badp), expect_ok=False)
        eq(get(lg.port, hs256(claims())).status, 200, "the old keys still serve")


@test
def claim_keys_a_rate_limit():
    """$jwt_claim_sub as a limit_req key: each user has their own budget."""
    k = keys()
    with Origin("o") as o:
        lg = Legate(simple_conf(free_port(), [o], workers=1, http_extra=
                    'limit_req_zones = ( { name = "u"; key = "$jwt_claim_sub"; rate = "1r/m"; } );',
                    route_extra='auth_jwt = "api"; auth_jwt_secret_file = "%s";'
                    'limit_req = { zone = "u"; nodelay = true; };' % k.secret))
        eq(get(lg.port, hs256(claims(sub="alice"))).status, 200)
        eq(get(lg.port, hs256(claims(sub="alice"))).status, 429, "alice's second in a minute")
        eq(get(lg.port, hs256(claims(sub="bob"))).status, 200, "bob has his own budget")
        eq(get(lg.port).status, 401, "no token: refused before the limit counts it")


if __name__ == "__main__":
    main()

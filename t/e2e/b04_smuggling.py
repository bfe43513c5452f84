#!/usr/bin/env python3
"""Request smuggling and malformed messages (RFC 9112 section 11.2).

Every bad request must be answered with an error (400 unless noted), the
client connection closed, and the origin must not see it: no request at all
for head-level faults; for faults inside a streamed chunked body, at most an
incomplete request, and never the smuggled "/smuggled".
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from legate_test import *  # noqa: E402,F401,F403
from legate_test import read_request_head  # noqa: E402

SMUG = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def post(headers, body=""):
    return "POST /s HTTP/1.1\r\nHost: x\r\n" + headers + "\r\n" + body + SMUG


# name, raw request, accepted statuses, fault inside the body (origin may see the head)
HEAD_CASES = [
    ("cl_and_te", post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")),
    ("te_and_cl", post("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", "0\r\n\r\n")),
    ("two_different_cl", post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!")),
    ("cl_list_different", post("Content-Length: 5, 6\r\n", "hello!")),
    ("cl_junk_suffix", post("Content-Length: 5x\r\n", "hello")),
    ("cl_plus_sign", post("Content-Length: +5\r\n", "hello")),
    ("cl_negative", post("Content-Length: -5\r\n", "hello")),
    ("cl_hex", post("Content-Length: 0x5\r\n", "hello")),
    ("cl_empty", post("Content-Length: \r\n", "hello")),
    ("cl_inner_space", post("Content-Length: 1 0\r\n", "hello")),
    ("cl_overflow", post("Content-Length: 99999999999999999999999999\r\n", "hello"), {400, 413}),
    ("te_gzip_chunked", post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"), {400, 501}),
    ("te_chunked_gzip", post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n")),
    ("te_chunked_twice", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                              "0\r\n\r\n")),
    ("te_unknown", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"), {400, 501}),
    ("te_vertical_tab", post("Transfer-Encoding:\x0bchunked\r\n", "0\r\n\r\n")),
    ("te_obs_fold", post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n")),
    ("bare_cr_in_value", "GET /s HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n" + SMUG),
    ("bare_cr_line_end", "GET /s HTTP/1.1\r\nHost: x\r\nX-A: b\r\r\n\r\n" + SMUG),
    ("obs_fold", "GET /s HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n" + SMUG),
    ("space_before_colon", post("Content-Length : 5\r\n", "hello")),
    ("tab_before_colon", "GET /s HTTP/1.1\r\nHost: x\r\nX-A\t: b\r\n\r\n" + SMUG),
    ("nul_in_value", "GET /s HTTP/1.1\r\nHost: x\r\nX-A: b\x00c\r\n\r\n" + SMUG),
    ("nul_in_name", "GET /s HTTP/1.1\r\nHost: x\r\nX-\x00A: b\r\n\r\n" + SMUG),
    ("space_in_name", "GET /s HTTP/1.1\r\nHost: x\r\nX A: b\r\n\r\n" + SMUG),
    ("empty_name", "GET /s HTTP/1.1\r\nHost: x\r\n: b\r\n\r\n" + SMUG),
    ("no_colon", "GET /s HTTP/1.1\r\nHost: x\r\nX-A b\r\n\r\n" + SMUG),
    ("two_host", "GET /s HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n" + SMUG),
    ("missing_host", "GET /s HTTP/1.1\r\nX-A: b\r\n\r\n" + SMUG),
    ("absolute_form_host_mismatch",
     "GET http://a.example/s HTTP/1.1\r\nHost: b.example\r\n\r\n" + SMUG),
    ("request_line_extra_token", "GET /s HTTP/1.1 x\r\nHost: x\r\n\r\n" + SMUG),
    ("request_line_double_space", "GET  /s HTTP/1.1\r\nHost: x\r\n\r\n" + SMUG),
    ("request_line_lowercase_version", "GET /s http/1.1\r\nHost: x\r\n\r\n" + SMUG),
    ("request_line_bad_method", "G(T /s HTTP/1.1\r\nHost: x\r\n\r\n" + SMUG),
    ("request_target_ctl", "GET /s\x01 HTTP/1.1\r\nHost: x\r\n\r\n" + SMUG),
    ("request_line_bare_cr", "GET /s HTTP/1.1\rHost: x\r\n\r\n" + SMUG),
]

BODY_CASES = [
    ("chunk_size_not_hex", post("Transfer-Encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n")),
    ("chunk_size_overflow", post("Transfer-Encoding: chunked\r\n",
                                 "fffffffffffffffff1\r\nhello\r\n0\r\n\r\n")),
    ("chunk_size_negative", post("Transfer-Encoding: chunked\r\n", "-1\r\nhello\r\n0\r\n\r\n")),
    ("chunk_size_empty", post("Transfer-Encoding: chunked\r\n", "\r\nhello\r\n0\r\n\r\n")),
    ("chunk_missing_crlf", post("Transfer-Encoding: chunked\r\n", "5\r\nhelloXX0\r\n\r\n")),
    ("chunk_size_bare_cr", post("Transfer-Encoding: chunked\r\n", "5\rhello\r\n0\r\n\r\n")),
]


@session
def streaming():
    o = Origin("stream")
    lg = Legate(simple_conf(free_port(), [o]))
    return o, lg


@session
def buffering():
    o = Origin("buffer")
    lg = Legate(simple_conf(free_port(), [o]))
    return o, lg


def check_rejected(env, raw, statuses, body_fault):
    o, lg = env
    before = o.stats()
    with Conn(lg.port) as c:
        c.send(raw.encode("latin-1"))
        r = c.read_response(timeout=10)
        ok(r is not None, "connection closed without a response")
        ok(r.status in statuses, "status %d, want %s" % (r.status, sorted(statuses)))
        ok(c.closed(5), "connection left open after %d" % r.status)
    if body_fault:
        def settled():
            s = o.stats()
            return s["requests"] - before["requests"] == s["incomplete"] - before["incomplete"]
        wait_until(settled, 5, what="origin: every request it saw to end incomplete")
    after = o.stats()
    ok("/smuggled" not in after["by_path"], "origin received the smuggled request")
    if not body_fault:
        eq(after["requests"] - before["requests"], 0, "requests the origin saw")
    ok(lg.alive(), "legate master died")


def register(name, raw, statuses, body_fault, env):
    def t():
        check_rejected(env(), raw, statuses, body_fault)
    t.__name__ = name
    test(t)


for case in HEAD_CASES:
    register(case[0], case[1], case[2] if len(case) > 2 else {400}, False, streaming)
for case in BODY_CASES:
    register(case[0] + "_streaming", case[1], {400}, True, streaming)
    register(case[0] + "_buffered", case[1], {400}, False, buffering)


@test
def valid_request_still_served():
    """The session legates are healthy after all the bad input."""
    for env in (streaming, buffering):
        o, lg = env()
        r = request(lg.port, "POST", "/fine?echo=1", body=b"hello")
        eq(r.status, 200)
        eq(r.json()["body_len"], 5)


# ---- response side: the origin misbehaves ----

def scripted(response):
    def handler(s, peer):
        read_request_head(s)
        s.sendall(response)
    return ScriptedServer(handler)


def via(srv):
    lg = Legate(simple_conf(free_port(), [srv.address]))
    data = http_raw(lg.port, "GET /r HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10)
    return lg, data


@test
def response_two_different_content_lengths_is_502():
    srv = scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
    lg, data = via(srv)
    eq(parse_responses(data)[0].status, 502)


@test
def response_bad_content_length_is_502():
    srv = scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello")
    lg, data = via(srv)
    eq(parse_responses(data)[0].status, 502)


@test
def response_cl_and_te():
    """Either 502, or chunked wins and Content-Length is not forwarded."""
    srv = scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n0\r\n\r\n")
    lg, data = via(srv)
    r = parse_responses(data)[0]
    if r.status != 502:
        eq(r.status, 200)
        ok(not ("Content-Length" in r.headers and "Transfer-Encoding" in r.headers),
           "both Content-Length and Transfer-Encoding forwarded: %r" % r.headers)
        eq(r.body, b"hello")


@test
def response_obs_fold_not_forwarded():
    srv = scripted(b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 2\r\n\r\nhi")
    lg, data = via(srv)
    head = data.split(b"\r\n\r\n")[0]
    ok(b"\r\n " not in head and b"\r\n\t" not in head, "obs-fold forwarded: %r" % head)
    ok(data.startswith(b"HTTP/1.1 502") or data.startswith(b"HTTP/1.1 200"), repr(data[:100]))


@test
def response_bare_cr_is_502():
    srv = scripted(b"HTTP/1.1 200 OK\r\nX-A: b\rc\r\nContent-Length: 2\r\n\r\nhi")
    lg, data = via(srv)
    eq(parse_responses(data)[0].status, 502)


@test
def response_garbage_status_line_is_502():
    srv = scripted(b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nhi")
    lg, data = via(srv)
    eq(parse_responses(data)[0].status, 502)


@test
def response_extra_bytes_not_served_to_next_request():
    """An origin sending more than Content-Length: the extra bytes must never
    become the response to another client's request."""
    evil = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nSMUGGLE")

    def handler(s, peer):
        while True:
            if not read_request_head(s):
                return
            s.sendall(evil)
    srv = ScriptedServer(handler)
    lg = Legate(simple_conf(free_port(), [srv.address], workers=1))
    for i in range(4):
        r = request(lg.port, target="/x%d" % i)
        ok(r is not None and r.body != b"SMUGGLE", "response desync: got %r" % (r,))


if __name__ == "__main__":
    main()

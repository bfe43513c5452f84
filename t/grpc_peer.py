#!/usr/bin/env python3
"""A gRPC server and client (Debian's python3-grpcio, no generated code:
raw bytes messages) for t/e2e/h02_upstream_h2.py, each in its own process:
grpcio's threads do not survive the fork()s of a test harness.

    python3 t/grpc_peer.py server [--port N] [--events FILE]
        Serves legate.test.Echo: Unary (b"echo:" + the request; b"fail..."
        aborts with PERMISSION_DENIED; b"sleepS" waits S seconds, writing
        "cancelled" to FILE if the call is cancelled meanwhile),
        ServerStream (N messages for b"N"), Bidi (b"re:" + each message).
        Prints "PORT <n>" once serving.

    python3 t/grpc_peer.py client --port N CASE
        Runs CASE (unary, errors, server_stream, bidi, deadline,
        read_timeout) against 127.0.0.1:N; prints "OK" and exits 0, or
        prints "FAIL: why" and exits 1.
"""
import argparse
import os
import sys
import threading
import time

try:
    import grpc
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")
    import grpc

SVC = "legate.test.Echo"


def pattern(n):
    base = b"0123456789abcdefghijklmnopqrstuvwxyz"
    return (base * (n // len(base) + 1))[:n]


def serve(args):
    from concurrent import futures

    def event(what):
        if args.events:
            with open(args.events, "a") as f:
                f.write(what + "\n")

    def unary(req, ctx):
        if req.startswith(b"fail"):
            ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "no: " + req.decode())
        if req.startswith(b"sleep"):
            end = time.time() + float(req[5:].decode())
            while time.time() < end:
                if not ctx.is_active():
                    event("cancelled")
                    return b""
                time.sleep(0.02)
        ctx.set_trailing_metadata((("x-echo-len", str(len(req))),))
        return b"echo:" + req

    def server_stream(req, ctx):
        for i in range(int(req.decode())):
            yield b"%d:" % i + pattern(i * 37 % 5000)

    def bidi(reqs, ctx):
        for r in reqs:
            yield b"re:" + r

    handler = grpc.method_handlers_generic_handler(SVC, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:%d" % args.port)
    if not port:
        print("FAIL: cannot bind", flush=True)
        sys.exit(1)
    server.start()
    print("PORT %d" % port, flush=True)
    server.wait_for_termination()


class Fail(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Fail(why)


def case_unary(ch):
    call = ch.unary_unary("/%s/Unary" % SVC)
    for n in (0, 1, 1000, 300000):
        msg = pattern(n)
        resp, c = call.with_call(msg, timeout=10)
        check(resp == b"echo:" + msg, "unary of %d bytes: wrong answer" % n)
        check(c.code() == grpc.StatusCode.OK, "unary: status %s" % c.code())
        got = dict(c.trailing_metadata()).get("x-echo-len")
        check(got == str(n), "trailing metadata x-echo-len %r, want %d" % (got, n))


def case_errors(ch):
    try:
        ch.unary_unary("/%s/Unary" % SVC)(b"fail please", timeout=10)
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.PERMISSION_DENIED,
              "grpc-status of the error: %s (%s)" % (e.code(), e.details()))
        check(e.details() == "no: fail please", "grpc-message: %r" % e.details())
        return
    raise Fail("the call should have failed")


def case_server_stream(ch):
    got = list(ch.unary_stream("/%s/ServerStream" % SVC)(b"200", timeout=20))
    check(len(got) == 200, "%d messages, want 200" % len(got))
    for i, m in enumerate(got):
        check(m == b"%d:" % i + pattern(i * 37 % 5000), "message %d differs" % i)


def case_bidi(ch):
    # lock-step: each answer arrives before the next message is sent, so
    # both directions really stream at once through the proxy
    cv = threading.Condition()
    done = []
    errors = []

    def gen():
        for i in range(50):
            yield b"m%d" % i + pattern(i * 101)
            with cv:
                if not cv.wait_for(lambda: len(done) > i, 10):
                    errors.append("answer %d did not come before message %d" % (i, i + 1))
                    return
    for i, r in enumerate(ch.stream_stream("/%s/Bidi" % SVC)(gen(), timeout=30)):
        check(r == b"re:m%d" % i + pattern(i * 101), "answer %d differs" % i)
        with cv:
            done.append(r)
            cv.notify_all()
    check(not errors, "; ".join(errors))
    check(len(done) == 50, "%d answers, want 50" % len(done))


def case_deadline(ch):
    t0 = time.time()
    try:
        ch.unary_unary("/%s/Unary" % SVC)(b"sleep3", timeout=0.5)
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, "status %s" % e.code())
        check(time.time() - t0 < 2.5, "the deadline did not end the call")
        return
    raise Fail("the deadline should have passed")


def case_read_timeout(ch):
    # legate's proxy_read_timeout (1s in the test) ends a call whose own
    # deadline is much longer
    t0 = time.time()
    try:
        ch.unary_unary("/%s/Unary" % SVC)(b"sleep4", timeout=30)
    except grpc.RpcError as e:
        check(e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                           grpc.StatusCode.UNKNOWN), "status %s" % e.code())
        check(time.time() - t0 < 3.5, "took %.1f s: not ended by proxy_read_timeout"
              % (time.time() - t0))
        return
    raise Fail("proxy_read_timeout should have ended the call")


def client(args):
    fn = globals().get("case_" + args.case)
    if fn is None:
        print("FAIL: no case %s" % args.case)
        sys.exit(2)
    ch = grpc.insecure_channel("127.0.0.1:%d" % args.port)
    try:
        fn(ch)
    except Fail as e:
        print("FAIL: %s" % e, flush=True)
        os._exit(1)
    except grpc.RpcError as e:
        print("FAIL: %s: %s" % (e.code(), e.details()), flush=True)
        os._exit(1)
    print("OK", flush=True)
    ch.close()
    os._exit(0)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--events")
    c = sub.add_parser("client")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("case")
    args = ap.parse_args()
    if args.mode == "server":
        serve(args)
    else:
        client(args)


if __name__ == "__main__":
    main()

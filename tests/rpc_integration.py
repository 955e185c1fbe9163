#!/usr/bin/env python3
"""Integration test of the rpc/ transport against tests/rpc_testd.c.

Starts rpc-testd on 127.0.0.1 port 0 (several configurations) and drives it with a
Python gRPC client (Debian's python3-grpcio; stubs generated here from proto/ and
tests/rpc_test.proto with protoc + grpc_python_plugin) and with the C client
(rpc-testd client, i.e. rpc/rpc_client.c). Checks health Check/Watch, UNIMPLEMENTED for
unknown methods, INVALID_ARGUMENT for garbage payloads, oversized messages, bearer-token
auth (health exempt), status mapping over the wire, streaming with a slow reader (memory
stays bounded), the stream buffer limit, client cancellation and deadlines, the bounded
job queue, TLS / mTLS / the plaintext health port, .env settings, refusal of a second
server on the same port, and SIGTERM (NOT_SERVING to watchers, drain, exit 0).

--load instead runs the load test: >= 100 concurrent clients x 100 RPCs each while a
server stream runs, requiring 0 failures; prints p50/p99 latency and server RSS.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from grpc_testlib import (Gate, ServerProcess, add_common_args, check, code_of,
                          fresh_work, make_certs, summary)
from grpc_testlib import gen_stubs as _gen_stubs


def gen_stubs(a, out):
    _gen_stubs(a.protoc, a.plugin, out, [(a.proto_dir, ["health.proto", "reap.proto"]),
                                         (a.test_proto_dir, ["rpc_test.proto"])])


class Server(ServerProcess):
    """rpc-testd serve ... on 127.0.0.1 port 0."""

    def __init__(self, a, name, args, env=None, expect_health_port=False):
        super().__init__(a.work, name, [a.testd, "serve", "--listen", "127.0.0.1:0"] + args,
                         env, ("port", "health-port") if expect_health_port else ("port",))


def read(p):
    with open(p, "rb") as f:
        return f.read()


def c_client(a, addr, *args):
    r = subprocess.run([a.testd, "client", "--target", addr] + list(args),
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout


# ---------------------------------------------------------------------------------------

def test_main_server(a):
    import grpc
    import health_pb2 as hp
    import health_pb2_grpc as hg
    import rpc_test_pb2 as tp
    import rpc_test_pb2_grpc as tg

    token = "s3cret-token"
    # The token comes from a .env file: this also tests .env loading.
    envf = os.path.join(a.work, "main.env")
    with open(envf, "w") as f:
        f.write(f"# test settings\nexport REAP_TOKEN='{token}'\nREAP_WORKERS = 3\n")
    srv = Server(a, "main", ["--max-message-mb", "1", "--stream-buffer-mb", "2",
                             "--grace-ms", "3000", "--env-file", envf])
    auth = [("authorization", f"Bearer {token}")]
    ch = grpc.insecure_channel(srv.addr)
    health = hg.HealthStub(ch)
    demo = tg.DemoStub(ch)
    S = hp.HealthCheckResponse

    def stats():
        return demo.Stats(tp.StatsRequest(), metadata=auth, timeout=10)

    # Health (no token needed).
    check(health.Check(hp.HealthCheckRequest(service=""), timeout=5).status == S.SERVING,
          "health Check '' SERVING without a token")
    check(health.Check(hp.HealthCheckRequest(service="reap.test.v1.Demo"),
                       timeout=5).status == S.SERVING, "health Check of the demo service")
    c, _ = code_of(lambda: health.Check(hp.HealthCheckRequest(service="no.such"), timeout=5))
    check(c == grpc.StatusCode.NOT_FOUND, "health Check unknown service -> NOT_FOUND")
    w = health.Watch(hp.HealthCheckRequest(service=""), timeout=10)
    check(next(w).status == S.SERVING, "health Watch '' first message SERVING")
    w.cancel()
    w = health.Watch(hp.HealthCheckRequest(service="not.yet"), timeout=10)
    check(next(w).status == S.SERVICE_UNKNOWN, "health Watch unknown service SERVICE_UNKNOWN")
    w.cancel()

    # Unknown methods.
    raw = lambda m: ch.unary_unary(m, request_serializer=lambda x: x,
                                   response_deserializer=lambda x: x)
    c, d = code_of(lambda: raw("/reap.test.v1.Demo/Nope")(b"", metadata=auth, timeout=5))
    check(c == grpc.StatusCode.UNIMPLEMENTED and "Nope" in d,
          f"unknown method -> UNIMPLEMENTED ({d})")
    c, _ = code_of(lambda: raw("/other.Service/X")(b"", metadata=auth, timeout=5))
    check(c == grpc.StatusCode.UNIMPLEMENTED, "unknown service -> UNIMPLEMENTED")
    c, _ = code_of(lambda: raw("/grpc.health.v1.Health/Nope")(b"", timeout=5))
    check(c == grpc.StatusCode.UNIMPLEMENTED, "unknown health method -> UNIMPLEMENTED")

    # Garbage payloads.
    echo_raw = raw("/reap.test.v1.Demo/Echo")
    for blob, what in ((b"\xff\xff\xff\xff\xff", "bad tag"),
                       (b"\x0a\x10abc", "truncated field"),
                       (b"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", "overlong varint")):
        c, d = code_of(lambda: echo_raw(blob, metadata=auth, timeout=5))
        check(c == grpc.StatusCode.INVALID_ARGUMENT and "EchoRequest" in d,
              f"garbage payload ({what}) -> INVALID_ARGUMENT ({d})")
    c, _ = code_of(lambda: echo_raw(b"", metadata=auth, timeout=5))
    check(c == grpc.StatusCode.OK, "empty payload is a valid empty message")

    # Message size limit (server: 1 MiB).
    r = demo.Echo(tp.EchoRequest(text="x", blob=b"a" * (512 << 10)), metadata=auth, timeout=10)
    check(r.blob_size == 512 << 10, "512 KiB request accepted")
    c, _ = code_of(lambda: demo.Echo(tp.EchoRequest(blob=b"a" * (2 << 20)), metadata=auth,
                                     timeout=10))
    check(c == grpc.StatusCode.RESOURCE_EXHAUSTED, "2 MiB request -> RESOURCE_EXHAUSTED")

    # Token.
    c, _ = code_of(lambda: demo.Echo(tp.EchoRequest(text="x"), timeout=5))
    check(c == grpc.StatusCode.UNAUTHENTICATED, "missing token -> UNAUTHENTICATED")
    c, _ = code_of(lambda: demo.Echo(tp.EchoRequest(text="x"),
                                     metadata=[("authorization", "Bearer wrong")], timeout=5))
    check(c == grpc.StatusCode.UNAUTHENTICATED, "wrong token -> UNAUTHENTICATED")
    c, _ = code_of(lambda: demo.Echo(tp.EchoRequest(text="x"),
                                     metadata=[("authorization", token)], timeout=5))
    check(c == grpc.StatusCode.UNAUTHENTICATED, "token without 'Bearer' -> UNAUTHENTICATED")
    c, _ = code_of(lambda: demo.Echo(tp.EchoRequest(text="x"),
                                     metadata=[("authorization", f"bearer {token}x")],
                                     timeout=5))
    check(c == grpc.StatusCode.UNAUTHENTICATED, "token with a suffix -> UNAUTHENTICATED")
    r = demo.Echo(tp.EchoRequest(text="hello"), metadata=[("authorization", f"bearer {token}")],
                  timeout=5)
    check(r.text == "hello" and r.peer.startswith("ipv4:127.0.0.1"),
          "right token (scheme case-insensitive) -> OK")
    check(health.Check(hp.HealthCheckRequest(), timeout=5).status == S.SERVING,
          "health still reachable without a token")

    # Status mapping over the wire.
    for req, want, text in (
            (tp.EchoRequest(fail_code=6, fail_message="run exists"),
             grpc.StatusCode.ALREADY_EXISTS, "run exists"),
            (tp.EchoRequest(fail_code=7, fail_message="outside roots"),
             grpc.StatusCode.PERMISSION_DENIED, "outside roots"),
            (tp.EchoRequest(reap_error=-2, fail_message="shard.safetensors: bad header"),
             grpc.StatusCode.FAILED_PRECONDITION, "echo: shard.safetensors: bad header"),
            (tp.EchoRequest(reap_error=-3, fail_message="ratio"),
             grpc.StatusCode.INVALID_ARGUMENT, "echo: ratio"),
            (tp.EchoRequest(reap_error=-4, fail_message="model"),
             grpc.StatusCode.NOT_FOUND, "echo: model"),
            (tp.EchoRequest(reap_error=-10, fail_message="bug"),
             grpc.StatusCode.INTERNAL, "echo: bug")):
        c, d = code_of(lambda: demo.Echo(req, metadata=auth, timeout=5))
        check(c == want and d == text, f"handler error -> {want.name} '{d}'")

    # Streams.
    for detached in (False, True):
        evs = list(demo.Count(tp.CountRequest(n=10, detached=detached), metadata=auth,
                              timeout=10))
        check([e.i for e in evs] == list(range(10)) and evs[-1].last,
              f"Count stream of 10 ({'own thread' if detached else 'handler thread'})")
    evs, c = [], None
    try:
        for e in demo.Count(tp.CountRequest(n=10, fail_after=3, fail_code=9), metadata=auth,
                            timeout=10):
            evs.append(e.i)
    except grpc.RpcError as e:
        c = e.code()
    check(evs == [0, 1, 2] and c == grpc.StatusCode.FAILED_PRECONDITION,
          "stream that fails after 3 events: 3 events, then the error status")

    # Slow reader: 20000 progress events of 16 KiB (320 MB offered); the reader takes one,
    # then reads nothing until the server has offered them all (its job has ended): latest
    # wins, so the server's queue and memory stay bounded; the final event is never lost.
    rss0 = srv.rss_kb()
    n, got, last = 20000, 0, None
    t0 = time.time()
    c_act = stats().count_active
    it = demo.Count(tp.CountRequest(n=n, payload_bytes=16384, progress=True, detached=True),
                    metadata=auth, timeout=120)
    last = next(it)
    got = 1
    all_offered = poll(lambda: stats().count_active == c_act, 120)
    for e in it:
        got += 1
        last = e
    st = stats()
    rss1 = srv.rss_kb()
    check(last is not None and last.i == n - 1 and last.last,
          f"slow reader: final event delivered ({got} of {n} events received)")
    check(all_offered and got < n, "slow reader: progress events coalesced")
    check(st.stream_bytes_max <= 4 * 16500,
          f"slow reader: unsent stream bytes stayed <= {st.stream_bytes_max} (bound 66000)")
    check(rss1 - rss0 < 64 * 1024,
          f"slow reader: server RSS {rss0} -> {rss1} KiB ({time.time() - t0:.1f} s)")

    # A reader that does not read reliable messages: dropped at the 2 MiB stream buffer.
    c0 = stats().count_cancelled
    it = demo.Count(tp.CountRequest(n=4000, payload_bytes=16384, detached=True), metadata=auth,
                    timeout=60)
    # Nothing is read until the server has given up on the stream (it must: 64 MB offered).
    poll(lambda: stats().count_cancelled > c0, 60)
    got, c = 0, None
    try:
        for _ in it:
            got += 1
    except grpc.RpcError as e:
        c = e.code()
    check(c == grpc.StatusCode.RESOURCE_EXHAUSTED and got < 4000,
          f"stalled reader of reliable events -> RESOURCE_EXHAUSTED after {got}")
    poll(lambda: stats().stream_bytes == 0)
    st = stats()
    check(st.count_cancelled > c0 and st.stream_bytes == 0,
          "stalled reader: the worker saw the cancellation and the queue was freed")

    # Client cancel mid-stream.
    c0 = stats().count_cancelled
    it = demo.Count(tp.CountRequest(n=1000, interval_ms=10, detached=True), metadata=auth,
                    timeout=60)
    for i, _ in enumerate(it):
        if i == 4:
            break
    it.cancel()
    poll(lambda: stats().count_cancelled != c0)
    st = stats()
    check(st.count_cancelled == c0 + 1, "client cancel mid-stream seen by the worker")

    # Client cancel of a unary call, and a deadline.
    # (The handler runs 60 s unless it sees the cancellation; it is cancelled once it is
    # known to be running.)
    s0 = stats().slow_cancelled
    fut = demo.Slow.future(tp.SlowRequest(ms=60000), metadata=auth, timeout=120)
    running = poll(lambda: stats().slow_active == 1)
    fut.cancel()
    seen = poll(lambda: stats().slow_cancelled == s0 + 1 and stats().slow_active == 0)
    check(running and seen, "client cancel of a running unary call seen by the handler")
    c, _ = code_of(lambda: demo.Slow(tp.SlowRequest(ms=60000), metadata=auth, timeout=0.3))
    check(c == grpc.StatusCode.DEADLINE_EXCEEDED, "deadline -> DEADLINE_EXCEEDED")
    # Whether its handler had started or not, none is left running.
    check(poll(lambda: stats().slow_active == 0, 90),
          "the deadline's handler saw it (or never ran): none left running")

    # The C client (rpc/rpc_client.c).
    rc, out = c_client(a, srv.addr, "--token", token, "echo", "from-c")
    check(rc == 0 and "echo from-c" in out, "C client: unary echo")
    rc, out = c_client(a, srv.addr, "--token", token, "count", "5")
    check(rc == 0 and "event 4 last" in out and "events 5" in out, "C client: stream of 5")
    rc, out = c_client(a, srv.addr, "--token", token, "stop-after", "3")
    check(rc == 1 and "events 3" in out and "status CANCELLED" in out,
          "C client: stops a stream early")
    rc, out = c_client(a, srv.addr, "--token", "bad", "echo", "x")
    check(rc == 1 and "status UNAUTHENTICATED" in out, "C client: wrong token")
    rc, out = c_client(a, srv.addr, "health", "")
    check(rc == 0 and "health 1" in out, "C client: health without a token")
    rc, out = c_client(a, srv.addr, "--token", token, "--timeout-ms", "200", "slow", "60000")
    check(rc == 1 and "DEADLINE_EXCEEDED" in out, "C client: deadline")
    rc, out = c_client(a, "127.0.0.1:1", "--timeout-ms", "2000", "echo", "x")
    check(rc == 1 and "status UNAVAILABLE" in out or "DEADLINE_EXCEEDED" in out,
          f"C client: no server -> error ({out.strip()})")

    # Modest concurrency on this server (the full load test is --load).
    errors = []

    def worker():
        c2 = grpc.insecure_channel(srv.addr)
        d2 = tg.DemoStub(c2)
        for i in range(20):
            try:
                d2.Echo(tp.EchoRequest(text=str(i)), metadata=auth, timeout=10)
            except grpc.RpcError as e:
                errors.append(e.code())
        c2.close()
    ts = [threading.Thread(target=worker) for _ in range(20)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    check(not errors, f"20 clients x 20 calls: {len(errors)} failures")

    poll(lambda: (lambda x: x.calls_live == 1 and x.count_active == 0 and
                  x.stream_bytes == 0 and x.slow_active == 0)(stats()))
    st = stats()
    check(st.calls_live == 1 and st.count_active == 0 and st.stream_bytes == 0,
          f"no call contexts leaked (live {st.calls_live}, streams {st.count_active})")
    check(st.calls_unauthenticated >= 4 and st.calls_unimplemented >= 3,
          "server counters: unauthenticated and unimplemented calls")

    # A second server on the same port must fail (SO_REUSEPORT off).
    r = subprocess.run([a.testd, "serve", "--listen", srv.addr], capture_output=True,
                       text=True, timeout=20)
    check(r.returncode != 0 and "cannot listen" in r.stderr,
          "second server on the same port refused")

    # SIGTERM: watchers see NOT_SERVING, a streaming job stops at its next step, a call
    # that ignores the shutdown is cancelled after the grace period, exit status 0.
    watch_seen, count_end, slow_end = [], [], []

    def watcher():
        try:
            for m in health.Watch(hp.HealthCheckRequest(service=""), timeout=30):
                watch_seen.append(m.status)
        except grpc.RpcError as e:
            watch_seen.append(e.code())

    def counter():
        got = 0
        try:
            for _ in demo.Count(tp.CountRequest(n=100000, interval_ms=50, detached=True),
                                metadata=auth, timeout=60):
                got += 1
            count_end.append(("OK", got))
        except grpc.RpcError as e:
            count_end.append((e.code(), e.details()))

    def slow():
        slow_end.append(code_of(lambda: demo.Slow(tp.SlowRequest(ms=60000), metadata=auth,
                                                  timeout=60))[0])
    ts = [threading.Thread(target=f) for f in (watcher, counter, slow)]
    [t.start() for t in ts]
    # SIGTERM once the watcher, the stream and the slow call are known to be in place.
    poll(lambda: watch_seen and (lambda x: x.count_active == 1 and x.slow_active == 1)(
        stats()))
    t0 = time.time()
    srv.p.send_signal(signal.SIGTERM)
    rc = srv.stop(timeout=30)
    took = time.time() - t0
    [t.join(10) for t in ts]
    check(rc == 0, f"SIGTERM: exit status {rc} after {took:.1f} s")
    check(S.NOT_SERVING in watch_seen, f"SIGTERM: Watch saw NOT_SERVING ({watch_seen})")
    check(count_end and count_end[0][0] == grpc.StatusCode.UNAVAILABLE and
          "shutting down" in count_end[0][1], f"SIGTERM: stream job stopped ({count_end})")
    check(slow_end and slow_end[0] in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE),
          f"SIGTERM: call ignoring the shutdown cancelled after the grace ({slow_end})")
    check(took > 2.5, f"SIGTERM: the call ignoring it had its grace (3 s) before it was "
                      f"cancelled ({took:.1f} s)")
    with open(os.path.join(a.work, "main.log")) as f:
        log = f.read()
    check("shut down cleanly" in log, "SIGTERM: clean shutdown logged")
    ch.close()


def test_tls(a):
    import grpc
    import health_pb2 as hp
    import health_pb2_grpc as hg
    import rpc_test_pb2 as tp
    import rpc_test_pb2_grpc as tg

    if not shutil.which("openssl"):
        print("SKIPPED TLS tests: openssl not found")
        return
    cert = make_certs(os.path.join(a.work, "certs"))
    # a TLS file that is not the PEM it should be: refused at start, naming the file
    for args, want in (
            (["--tls-cert", cert["server.key"], "--tls-key", cert["server.key"]],
             f"TLS certificate '{cert['server.key']}': no PEM certificate"),
            (["--tls-cert", cert["server.pem"], "--tls-key", cert["server.pem"]],
             f"TLS key '{cert['server.pem']}': no PEM private key"),
            (["--tls-cert", cert["server.pem"], "--tls-key", cert["server.key"],
              "--tls-client-ca", cert["server.key"]],
             f"TLS client CA '{cert['server.key']}': no PEM certificate")):
        r = subprocess.run([a.testd, "serve", "--listen", "127.0.0.1:0"] + args,
                           capture_output=True, text=True, timeout=20)
        check(r.returncode != 0 and want in r.stderr,
              f"not PEM refused: {want} (exit {r.returncode}: {r.stderr.strip()[-200:]})")
    srv = Server(a, "tls", ["--tls-cert", cert["server.pem"], "--tls-key", cert["server.key"],
                            "--health-listen", "127.0.0.1:0"], expect_health_port=True)
    creds = grpc.ssl_channel_credentials(root_certificates=read(cert["ca.pem"]))
    ch = grpc.secure_channel(srv.addr, creds)
    r = tg.DemoStub(ch).Echo(tp.EchoRequest(text="tls"), timeout=10)
    check(r.text == "tls", "TLS: echo over TLS verified against the test CA")
    c, _ = code_of(lambda: tg.DemoStub(grpc.insecure_channel(srv.addr)).Echo(
        tp.EchoRequest(text="x"), timeout=5))
    check(c == grpc.StatusCode.UNAVAILABLE, "TLS: plaintext client refused")
    bad = grpc.ssl_channel_credentials(root_certificates=read(cert["other.pem"]))
    c, _ = code_of(lambda: tg.DemoStub(grpc.secure_channel(srv.addr, bad)).Echo(
        tp.EchoRequest(text="x"), timeout=5))
    check(c == grpc.StatusCode.UNAVAILABLE, "TLS: client trusting another CA refused")
    hch = grpc.insecure_channel(f"127.0.0.1:{srv.health_port}")
    check(hg.HealthStub(hch).Check(hp.HealthCheckRequest(), timeout=5).status ==
          hp.HealthCheckResponse.SERVING, "TLS: plaintext health port answers Check")
    c, _ = code_of(lambda: tg.DemoStub(hch).Echo(tp.EchoRequest(text="x"), timeout=5))
    check(c == grpc.StatusCode.UNIMPLEMENTED, "TLS: health port serves nothing else")
    rc, out = c_client(a, srv.addr, "--tls-ca", cert["ca.pem"], "echo", "c-tls")
    check(rc == 0 and "echo c-tls" in out, "TLS: C client")
    rc, out = c_client(a, srv.addr, "--timeout-ms", "3000", "echo", "x")
    check(rc == 1, "TLS: C client without TLS fails")
    check(srv.stop() == 0, "TLS: server exit 0")
    ch.close()
    hch.close()

    srv = Server(a, "mtls", ["--tls-cert", cert["server.pem"], "--tls-key", cert["server.key"],
                             "--tls-client-ca", cert["ca.pem"]])
    c, _ = code_of(lambda: tg.DemoStub(grpc.secure_channel(srv.addr, creds)).Echo(
        tp.EchoRequest(text="x"), timeout=5))
    check(c == grpc.StatusCode.UNAVAILABLE, "mTLS: client without a certificate refused")
    mcreds = grpc.ssl_channel_credentials(root_certificates=read(cert["ca.pem"]),
                                          private_key=read(cert["client.key"]),
                                          certificate_chain=read(cert["client.pem"]))
    r = tg.DemoStub(grpc.secure_channel(srv.addr, mcreds)).Echo(tp.EchoRequest(text="m"),
                                                                timeout=10)
    check(r.text == "m", "mTLS: client certificate accepted")
    rc, out = c_client(a, srv.addr, "--tls-ca", cert["ca.pem"], "--tls-cert",
                       cert["client.pem"], "--tls-key", cert["client.key"], "echo", "c-mtls")
    check(rc == 0 and "echo c-mtls" in out, "mTLS: C client with a certificate")
    check(srv.stop() == 0, "mTLS: server exit 0")


def poll(fn, deadline_s=60):
    """Call fn until it returns true (for things that must happen); its last value."""
    end = time.time() + deadline_s
    v = fn()
    while not v and time.time() < end:
        time.sleep(0.02)
        v = fn()
    return v


def test_queue_limit(a):
    import grpc
    import health_pb2 as hp
    import health_pb2_grpc as hg
    import rpc_test_pb2 as tp
    import rpc_test_pb2_grpc as tg

    gate = Gate(os.path.join(a.work, "gate-queue"))
    srv = Server(a, "queue", ["--workers", "1", "--max-queue", "2", "--health-stall-ms", "0",
                              "--gate", gate.path])
    ch = grpc.insecure_channel(srv.addr)
    demo, health = tg.DemoStub(ch), hg.HealthStub(ch)
    S = hp.HealthCheckResponse
    # The worker is held by the first call; the second waits in the queue (health says
    # so: every worker busy, a call waiting); of 6 more, 1 fits the queue, 5 are refused.
    futs = [demo.Echo.future(tp.EchoRequest(text="wait-gate"), timeout=60)]
    futs.append(demo.Echo.future(tp.EchoRequest(text="wait-gate"), timeout=60))
    held = poll(lambda: health.Check(hp.HealthCheckRequest(service="reap.test.v1.Demo"),
                                     timeout=5).status == S.NOT_SERVING)
    more = [demo.Echo.future(tp.EchoRequest(text="x"), timeout=60) for _ in range(6)]
    poll(lambda: sum(f.done() for f in more) >= 5)
    gate.allow(2)
    codes = [code_of(f.result)[0] for f in futs + more]
    ok = codes.count(grpc.StatusCode.OK)
    busy = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    check(held and ok == 3 and busy == 5,
          f"1 worker (held by a gate) + queue of 2, 8 calls: {ok} served, {busy} "
          f"RESOURCE_EXHAUSTED")
    check(demo.Echo(tp.EchoRequest(text="after"), timeout=5).text == "after",
          "queue limit: server still serving")
    gate.close()
    check(srv.stop() == 0, "queue limit: server exit 0")
    ch.close()


def test_pool_health(a):
    """Health of the named service follows the handler pool: NOT_SERVING while every
    worker is held and a call waits (--health-stall-ms 0: no clock involved), SERVING again
    once they are free; the server as a whole ('') stays SERVING (liveness)."""
    import grpc
    import health_pb2 as hp
    import health_pb2_grpc as hg
    import rpc_test_pb2 as tp
    import rpc_test_pb2_grpc as tg

    gate = Gate(os.path.join(a.work, "gate-health"))
    srv = Server(a, "pool-health", ["--workers", "2", "--health-stall-ms", "0", "--gate",
                                    gate.path, "--health-listen", "127.0.0.1:0"],
                 expect_health_port=True)
    ch = grpc.insecure_channel(srv.addr)
    hch = grpc.insecure_channel(f"127.0.0.1:{srv.health_port}")
    demo, health = tg.DemoStub(ch), hg.HealthStub(ch)
    S = hp.HealthCheckResponse
    DEMO = "reap.test.v1.Demo"
    st = lambda h=health, svc=DEMO: h.Check(hp.HealthCheckRequest(service=svc),
                                            timeout=5).status
    seen = []

    def watcher():
        try:
            for m in health.Watch(hp.HealthCheckRequest(service=DEMO), timeout=120):
                seen.append(m.status)
        except grpc.RpcError:
            pass
    wt = threading.Thread(target=watcher)
    wt.start()
    check(st() == S.SERVING and poll(lambda: seen == [S.SERVING]),
          "pool health: SERVING while the pool is free (Check, Watch)")
    held = [demo.Echo.future(tp.EchoRequest(text="wait-gate"), timeout=120) for _ in range(2)]
    waiting = demo.Echo.future(tp.EchoRequest(text="waits"), timeout=120)
    down = poll(lambda: st() == S.NOT_SERVING)
    check(down and st(h=hg.HealthStub(hch)) == S.NOT_SERVING and st(svc="") == S.SERVING,
          "every worker held, a call waiting: Check of the service NOT_SERVING (also on the "
          "health port); the server as a whole ('') still SERVING")
    check(poll(lambda: S.NOT_SERVING in seen) and not waiting.done(),
          f"Watch is told NOT_SERVING ({seen}); the waiting call has not run")
    gate.allow(2)
    res = [f.result().text for f in held + [waiting]]
    check(res == ["wait-gate", "wait-gate", "waits"],
          "the gate released: the held calls and the waiting one are served")
    up = poll(lambda: st() == S.SERVING)
    check(up and poll(lambda: seen[-1:] == [S.SERVING]),
          f"SERVING again once the pool has recovered (Check; Watch saw {seen})")
    gate.close()
    check(srv.stop() == 0, "pool health: server exit 0")
    wt.join(30)
    ch.close()
    hch.close()


def test_bad_config(a):
    r = subprocess.run([a.testd, "serve", "--tls-key", "/nonexistent"], capture_output=True,
                       text=True, timeout=20)
    check(r.returncode != 0 and "--tls-key" in r.stderr, "--tls-key without --tls-cert refused")
    r = subprocess.run([a.testd, "serve", "--listen", "127.0.0.1:0", "--env-file",
                        "/nonexistent.env"], capture_output=True, text=True, timeout=20)
    check(r.returncode == 2 and "nonexistent.env" in r.stderr, "missing --env-file refused")
    r = subprocess.run([a.testd, "serve", "--listen", "256.1.1.1:0"], capture_output=True,
                       text=True, timeout=20)
    check(r.returncode != 0 and "cannot listen" in r.stderr, "bad listen address refused")
    r = subprocess.run([a.testd, "serve", "--help"], capture_output=True, text=True, timeout=20)
    check(r.returncode == 0 and "REAP_TOKEN" in r.stdout and "REAP_LISTEN" in r.stdout,
          "--help lists the environment variables")


# ---------------------------------------------------------------------------------------

def run_load(a):
    import grpc
    import health_pb2 as hp
    import health_pb2_grpc as hg
    import rpc_test_pb2 as tp
    import rpc_test_pb2_grpc as tg

    token = "load-token"
    srv = Server(a, "load", ["--token", token, "--workers", "4"])
    auth = [("authorization", f"Bearer {token}")]
    n_clients, n_calls = a.clients, a.calls
    # Warm up, then the RSS baseline.
    ch0 = grpc.insecure_channel(srv.addr)
    demo0 = tg.DemoStub(ch0)
    for _ in range(50):
        demo0.Echo(tp.EchoRequest(text="w"), metadata=auth, timeout=10)
    # Baseline: one client, sequential calls (the per-call cost without contention).
    base = []
    for i in range(500):
        t = time.perf_counter()
        demo0.Echo(tp.EchoRequest(text="b"), metadata=auth, timeout=10)
        base.append(time.perf_counter() - t)
    base.sort()
    b50, b99 = base[len(base) // 2] * 1e3, base[int(len(base) * 0.99)] * 1e3
    rss_before = srv.rss_kb()

    # A server stream runs during the load (as a scoring run would).
    stream_events, stop = [0], threading.Event()

    def streamer():
        it = demo0.Count(tp.CountRequest(n=10**6, interval_ms=5, progress=True, detached=True,
                                         payload_bytes=256), metadata=auth, timeout=600)
        for _ in it:
            stream_events[0] += 1
            if stop.is_set():
                it.cancel()
                break
    st_thread = threading.Thread(target=streamer)
    st_thread.start()
    streaming = poll(lambda: stream_events[0] > 0)   # it runs before the load starts

    lat, errors, lock = [], [], threading.Lock()
    barrier = threading.Barrier(n_clients)

    def client(k):
        ch = grpc.insecure_channel(srv.addr)
        h, d = hg.HealthStub(ch), tg.DemoStub(ch)
        calls = [lambda: h.Check(hp.HealthCheckRequest(), timeout=30),
                 lambda: d.Echo(tp.EchoRequest(text="load"), metadata=auth, timeout=30),
                 lambda: d.Stats(tp.StatsRequest(), metadata=auth, timeout=30),
                 lambda: d.Echo(tp.EchoRequest(text="x" * 1024), metadata=auth, timeout=30)]
        h.Check(hp.HealthCheckRequest(), timeout=30)   # connect before the clock starts
        my = []
        barrier.wait()
        for i in range(n_calls):
            t = time.perf_counter()
            try:
                calls[(i + k) % len(calls)]()
                my.append(time.perf_counter() - t)
            except grpc.RpcError as e:
                with lock:
                    errors.append(str(e.code()))
        with lock:
            lat.extend(my)
        ch.close()

    ts = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    cpu0 = srv.cpu_s()
    t0 = time.perf_counter()
    [t.start() for t in ts]
    [t.join() for t in ts]
    wall = time.perf_counter() - t0
    cpu = srv.cpu_s() - cpu0
    # The stream (10^6 events, 5 ms apart: far from done) survived the load: it goes on.
    at_end = stream_events[0]
    kept_on = poll(lambda: stream_events[0] > at_end) and st_thread.is_alive()
    stop.set()
    st_thread.join(30)
    poll(lambda: demo0.Stats(tp.StatsRequest(), metadata=auth, timeout=10).calls_live == 1)
    rss_after = srv.rss_kb()
    st = demo0.Stats(tp.StatsRequest(), metadata=auth, timeout=10)
    lat.sort()
    total = n_clients * n_calls
    p50 = lat[len(lat) // 2] * 1e3 if lat else 0
    p99 = lat[int(len(lat) * 0.99)] * 1e3 if lat else 0
    check(len(errors) == 0, f"load: {total} RPCs from {n_clients} clients, "
                            f"{len(errors)} failures {sorted(set(errors))}")
    check(streaming and kept_on, f"load: a stream ran through the load and went on after it "
                                 f"({at_end} events by its end)")
    check(st.calls_live == 1, f"load: no calls left behind (live {st.calls_live})")
    print(f"load: {total} RPCs ({n_clients} clients x {n_calls}) in {wall:.1f} s = "
          f"{total / wall:.0f} RPC/s; server CPU {cpu:.2f} s "
          f"({cpu / total * 1e6:.0f} us/RPC incl. the stream); latency p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
          f"server RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB; "
          f"stream events during the load {stream_events[0]}; baseline (1 client, "
          f"sequential Echo) p50 {b50:.2f} ms, p99 {b99:.2f} ms")
    with open(os.path.join(a.work, "load.txt"), "w") as f:
        f.write(f"clients {n_clients}\ncalls {n_calls}\ntotal {total}\nfailures {len(errors)}\n"
                f"wall_s {wall:.2f}\nrps {total / wall:.0f}\np50_ms {p50:.2f}\n"
                f"p99_ms {p99:.2f}\nrss_before_kib {rss_before}\nrss_after_kib {rss_after}\n"
                f"stream_events {stream_events[0]}\nbaseline_p50_ms {b50:.2f}\n"
                f"baseline_p99_ms {b99:.2f}\nserver_cpu_s {cpu:.2f}\n")
    check(srv.stop() == 0, "load: server exit 0")
    ch0.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--testd", required=True)
    ap.add_argument("--test-proto-dir", required=True)
    add_common_args(ap)
    a = ap.parse_args()
    a.testd = os.path.abspath(a.testd)
    fresh_work(a)
    gen_stubs(a, os.path.join(a.work, "pystubs"))
    import reap_pb2  # noqa: F401  (the product protocol compiles and imports)
    import reap_pb2_grpc  # noqa: F401
    if a.load:
        run_load(a)
    else:
        test_bad_config(a)
        test_main_server(a)
        test_tls(a)
        test_queue_limit(a)
        test_pool_health(a)
    return summary()


if __name__ == "__main__":
    sys.exit(main())

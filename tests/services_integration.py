#!/usr/bin/env python3
"""Integration test of the two services with a Python gRPC client.

Starts the real `reap-scorer serve` and `reap-pruner serve` on 127.0.0.1 port 0 over a
temporary store, with tiny generated checkpoints (reap-genmodel), and calls them with
Debian's python3-grpcio (stubs generated here from proto/ with protoc +
grpc_python_plugin):

  * every RPC of reap.v1.Scorer and reap.v1.Pruner and grpc.health.v1 (Check, Watch);
  * a client that goes away mid-run (the run goes on) and re-attaches with WatchRun;
  * CancelRun (the run stops at a layer boundary, its layers are committed, scoring the
    pair again resumes from the next layer);
  * the bounded run queue (RESOURCE_EXHAUSTED) and a duplicate request (ALREADY_EXISTS);
    a run queued behind a long one has its id at once (first event `queued`, position 1),
    is listed, read, watched by that id, and CancelRun ends it at once (CANCELLED) while
    the running one goes on and finishes;
  * keep sets and a prune with an explicit ratio 0 / n_prune 0 (the *_set flags): every
    expert kept, not the server's default ratio;
  * more than 20 kinds of bad request, each with its status code, the servers staying up
    (both ratio and n_prune: INVALID_ARGUMENT; n_prune >= the model's experts:
    FAILED_PRECONDITION);
  * TLS (plaintext and wrong-CA clients refused), mTLS on the scorer (a client without a
    certificate of the client CA refused, reapctl --tls-cert/--tls-key served) and the
    bearer token;
  * SIGTERM during a run: NOT_SERVING, the layer in progress committed, exit 0; after a
    restart the run shows as interrupted, scoring again resumes it, and the statistics
    equal those of a one-shot `reap-scorer run` bit for bit;
  * files inside a model directory (test_files): a FIFO config.json, shard or
    tokenizer.json and a FIFO signature end Score, Prune and Verify with an error
    naming the file, at once; a shard or an extra file linked out of the roots is
    refused PERMISSION_DENIED naming it (nothing outside is copied); a Hugging Face
    cache snapshot (links into ../../blobs/) scores and prunes; then SIGTERM exits 0.

--load instead runs the load test: >= 100 concurrent clients x >= 100 RPCs (health,
ListRuns, GetRun, GetStats) while a scoring run streams; 0 failures required; prints and
records p50/p99 latency and the scorer's RSS before/after (load.txt).
"""
import argparse
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from grpc_testlib import (Gate, ServerProcess, add_common_args, check, code_of,
                          fresh_work, make_certs, summary)
from grpc_testlib import gen_stubs as _gen_stubs

TOKEN = "svc-test-token"


def gen_stubs(a, out):
    _gen_stubs(a.protoc, a.plugin, out, [(a.proto_dir, ["health.proto", "reap.proto"])])


class Server(ServerProcess):
    """A service process (argv: its command line) on 127.0.0.1 port 0."""

    def __init__(self, a, name, argv, env=None):
        super().__init__(a.work, name, argv + ["--listen", "127.0.0.1:0"], env)


def wait_log(srv, text, deadline_s=60):
    """Poll a server's log until `text` appears (something that must happen)."""
    end = time.time() + deadline_s
    while text not in srv.logtext() and time.time() < end:
        time.sleep(0.02)
    return text in srv.logtext()


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **kw)


_FIXTURE = {}


def fixture(a, **kw):
    """One Fixture per work directory."""
    if a.work not in _FIXTURE:
        _FIXTURE[a.work] = Fixture(a, **kw)
    return _FIXTURE[a.work]


class Fixture:
    """Models, calibration files, roots, keys under a.work."""

    def __init__(self, a, layers=6, hidden=192, samples=48):
        w = a.work
        self.models = os.path.join(w, "models")
        self.calib = os.path.join(w, "calib")
        self.out = os.path.join(w, "out")
        self.outside = os.path.join(w, "outside")
        for d in (self.models, self.calib, self.out, self.outside):
            os.makedirs(d, exist_ok=True)
        g = os.path.join(a.bin, "reap-genmodel")
        base = ["--family", "qwen3_vl_moe", "--layers", str(layers), "--hidden", str(hidden),
                "--heads", "6", "--kv-heads", "2", "--head-dim", "32", "--experts", "16",
                "--top-k", "4", "--moe-inter", "96", "--vocab", "800", "--shards", "2"]
        run([g, "--out", os.path.join(self.models, "m"), "--seed", "7"] + base +
            ["--calib", os.path.join(self.calib, "c1.jsonl"), "--samples", str(samples),
             "--min-len", "32", "--max-len", "200"])
        for i in range(2, 12):   # more calibration sets of the same model
            run([g, "--out", os.path.join(w, "unused"), "--layers", "1", "--vocab", "800",
                 "--calib", os.path.join(self.calib, f"c{i}.jsonl"), "--samples",
                 str(samples), "--min-len", "32", "--max-len", "200", "--calib-seed",
                 str(100 + i)])
        run([g, "--out", os.path.join(self.models, "m2"), "--seed", "9", "--layers", "2",
             "--vocab", "800"])
        # 100 experts: ratios whose E x ratio lands just below an integer (0.29, 0.57, 0.58)
        run([g, "--out", os.path.join(self.models, "m100"), "--seed", "11", "--family",
             "qwen3_vl_moe", "--layers", "1", "--hidden", "64", "--heads", "2",
             "--kv-heads", "1", "--head-dim", "32", "--experts", "100", "--top-k", "4",
             "--moe-inter", "16", "--vocab", "800", "--shards", "1"])
        with open(os.path.join(self.calib, "garbage.jsonl"), "w") as f:
            f.write('{"input_ids": [1, 2, 3]}\nthis is not json\n')
        os.makedirs(os.path.join(self.models, "empty"), exist_ok=True)
        os.makedirs(os.path.join(self.models, "bad"), exist_ok=True)
        with open(os.path.join(self.models, "bad", "config.json"), "w") as f:
            f.write("{ not json")
        shutil.copytree(os.path.join(self.models, "m"), os.path.join(self.outside, "m"),
                        dirs_exist_ok=True)
        shutil.copy(os.path.join(self.calib, "c1.jsonl"), os.path.join(self.outside, "c.jsonl"))
        link = os.path.join(self.models, "escape")
        if not os.path.lexists(link):
            os.symlink(os.path.join(self.outside, "m"), link)
        link = os.path.join(self.calib, "escape.jsonl")
        if not os.path.lexists(link):
            os.symlink(os.path.join(self.outside, "c.jsonl"), link)
        reapctl = os.path.join(a.bin, "reapctl")
        for k in ("k", "other"):
            if not os.path.exists(os.path.join(w, f"{k}.key")):
                run([reapctl, "keygen", "--out", os.path.join(w, k)])
        self.key = os.path.join(w, "k.key")
        with open(os.path.join(w, "k.pub")) as f:
            self.pub_text = f.read()
        with open(os.path.join(w, "other.pub")) as f:
            self.other_pub = f.read().splitlines()[1]


def start_scorer(a, fx, name="scorer", extra=None, env=None, store="store"):
    return Server(a, name, [os.path.join(a.bin, "reap-scorer"), "serve", "--store",
                            os.path.join(a.work, store), "--model-root", fx.models,
                            "--calib-root", fx.calib, "--backend", "cpu", "--threads", "1",
                            "--seq-len", "64", "--checkpoint-every", "1"] + (extra or []),
                  env=env)


def start_pruner(a, fx, name="pruner", extra=None, env=None, store="store"):
    return Server(a, name, [os.path.join(a.bin, "reap-pruner"), "serve", "--store",
                            os.path.join(a.work, store), "--model-root", fx.models,
                            "--output-root", fx.out, "--key", fx.key, "--threads", "2"]
                  + (extra or []), env=env)


def events(it, stop_after=None, queued=False):
    """Collect (kind, message) from a ScoreEvent / PruneEvent stream; with stop_after
    (kind, count) cancel the call after that many events of that kind. A Score stream's
    first event, `queued`, is left out unless queued=True."""
    import grpc
    out, code, n = [], grpc.StatusCode.OK, 0
    try:
        for ev in it:
            k = ev.WhichOneof("event")
            if k == "queued" and not out and not queued:
                continue
            out.append((k, getattr(ev, k)))
            if stop_after and k == stop_after[0]:
                n += 1
                if n >= stop_after[1]:
                    it.cancel()
                    return out, grpc.StatusCode.CANCELLED
    except grpc.RpcError as e:
        code = e.code()
    return out, code


def test_files(a):
    """Files inside a model directory that are FIFOs or links out of the roots (defects
    of files named like checkpoint files): each request ends with an error naming the
    file, within its deadline (a FIFO must never be waited on), nothing outside a root is
    read or copied, links that stay inside a root (a Hugging Face cache snapshot) work,
    the servers still answer, and SIGTERM ends both (exit 0). Runs after test_services:
    it uses that store's statistics of model m and its signed output p1."""
    import grpc
    import health_pb2 as hp
    import health_pb2_grpc as hg
    import reap_pb2 as rp
    import reap_pb2_grpc as rg

    fx = fixture(a)
    m = os.path.join(fx.models, "m")
    shards = sorted(n for n in os.listdir(m) if n.endswith(".safetensors"))

    def model_copy(name, replace=None, fifo=False, link_to=None):
        d = os.path.join(fx.models, name)
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(m, d)
        if replace:
            p = os.path.join(d, replace)
            if os.path.lexists(p):
                os.remove(p)
            if fifo:
                os.mkfifo(p)
            else:
                os.symlink(link_to, p)
        return name

    # FIFOs named like checkpoint files.
    fifo_cfg = model_copy("fifo-cfg", "config.json", fifo=True)
    fifo_shard = model_copy("fifo-shard", shards[0], fifo=True)
    fifo_tok = model_copy("fifo-tok", "tokenizer.json", fifo=True)
    with open(os.path.join(fx.calib, "text.jsonl"), "w") as f:
        f.write('{"text": "hello world"}\n')
    # Links out of every root: a shard, and an extra file the pruner would copy.
    with open(os.path.join(fx.outside, "secret.json"), "w") as f:
        f.write('{"secret": "outside every root"}\n')
    leak_shard = model_copy("leak-shard", shards[0],
                            link_to=os.path.join(fx.outside, "m", shards[0]))
    leak_extra = model_copy("leak-extra", "preprocessor_config.json",
                            link_to=os.path.join(fx.outside, "secret.json"))
    # A Hugging Face cache snapshot: every file a relative link into ../../blobs/.
    hub = os.path.join(fx.models, "hub", "models--x")
    shutil.rmtree(hub, ignore_errors=True)
    os.makedirs(os.path.join(hub, "blobs"))
    os.makedirs(os.path.join(hub, "snapshots", "abc"))
    for n in os.listdir(m):
        blob = hashlib.sha256(n.encode()).hexdigest()
        shutil.copy(os.path.join(m, n), os.path.join(hub, "blobs", blob))
        os.symlink(os.path.join("..", "..", "blobs", blob),
                   os.path.join(hub, "snapshots", "abc", n))
    snap = "hub/models--x/snapshots/abc"
    # Verify: a signed output whose signature is a FIFO.
    p1 = os.path.join(fx.out, "p1")
    fsig = os.path.join(fx.out, "fifo-sig")
    shutil.rmtree(fsig, ignore_errors=True)
    check(os.path.isdir(p1), "files: test_services left its signed output p1")
    if os.path.isdir(p1):
        shutil.copytree(p1, fsig)
        os.remove(os.path.join(fsig, "reap-manifest.json.minisig"))
        os.mkfifo(os.path.join(fsig, "reap-manifest.json.minisig"))

    sc_srv = start_scorer(a, fx, name="scorer-files")
    pr_srv = start_pruner(a, fx, name="pruner-files")
    sch, prch = grpc.insecure_channel(sc_srv.addr), grpc.insecure_channel(pr_srv.addr)
    sc, pr = rg.ScorerStub(sch), rg.PrunerStub(prch)

    def score(model, calib="c1.jsonl"):
        return code_of(lambda: list(sc.Score(rp.ScoreRequest(model_path=model,
                                                             calib_path=calib), timeout=30)))

    def prune(model, out):
        return code_of(lambda: list(pr.Prune(rp.PruneRequest(
            model_path=model, output_path=out, params=rp.PruneParams(ratio=0.25)),
            timeout=60)))

    C = grpc.StatusCode
    for what, (code, msg), want_code, want in [
        ("Score, config.json a FIFO", score(fifo_cfg), C.INVALID_ARGUMENT,
         "fifo-cfg/config.json: is a FIFO"),
        ("Score, a shard a FIFO", score(fifo_shard), C.INVALID_ARGUMENT,
         f"fifo-shard/{shards[0]}: is a FIFO"),
        ("Score, tokenizer.json a FIFO", score(fifo_tok, "text.jsonl"), C.INVALID_ARGUMENT,
         "fifo-tok/tokenizer.json: is a FIFO"),
        ("Prune, a shard a FIFO", prune(fifo_shard, "p-fifo"), C.INVALID_ARGUMENT,
         f"{shards[0]}: is a FIFO"),
        ("Score, a shard linked out of the roots", score(leak_shard), C.PERMISSION_DENIED,
         f"leak-shard/{shards[0]}: leads to"),
        ("Prune, a shard linked out of the roots", prune(leak_shard, "p-leak-shard"),
         C.PERMISSION_DENIED, f"leak-shard/{shards[0]}: leads to"),
        ("Prune, preprocessor_config.json linked out of the roots",
         prune(leak_extra, "p-leak-extra"), C.PERMISSION_DENIED,
         "leak-extra/preprocessor_config.json: leads to"),
    ]:
        check(code == want_code and want in msg,
              f"files: {what}: {want_code.name} naming the file ({code.name}: {msg[:160]})")
    check(not os.path.exists(os.path.join(fx.out, "p-leak-extra")) and
          not any("reap-tmp" in n for n in os.listdir(fx.out)),
          "files: the refused prune left no output (nothing from outside was copied)")
    v = code_of(lambda: pr.Verify(rp.VerifyRequest(output_path="fifo-sig"), timeout=30))
    check(v[0] == C.OK, f"files: Verify, signature a FIFO: answered ({v[0].name}: {v[1]})")
    if v[0] == C.OK:
        r = pr.Verify(rp.VerifyRequest(output_path="fifo-sig"), timeout=30)
        check(not r.ok and not r.signature_ok and
              any("minisig: is a FIFO" in p.message for p in r.problems),
              "files: Verify, signature a FIFO: not ok, the problem names the FIFO")
    # Links that stay inside a root: the HF cache snapshot scores and prunes.
    evs, code = events(sc.Score(rp.ScoreRequest(model_path=snap, calib_path="c1.jsonl"),
                                timeout=120))
    check(code == C.OK and evs and evs[-1][0] == "finished",
          f"files: Score of a Hugging Face cache snapshot (links into ../../blobs/): "
          f"finished ({code.name})")
    code, msg = prune(snap, "p-hub")
    check(code == C.OK and os.path.isfile(os.path.join(fx.out, "p-hub", "config.json")),
          f"files: Prune of the snapshot: written ({code.name} {msg[:120]})")
    for ch, svc in ((sch, "reap.v1.Scorer"), (prch, "reap.v1.Pruner")):
        st = hg.HealthStub(ch).Check(hp.HealthCheckRequest(service=svc), timeout=10).status
        check(st == hp.HealthCheckResponse.SERVING, f"files: {svc} still SERVING")
    check(sc.ListRuns(rp.ListRunsRequest(), timeout=10) is not None,
          "files: the scorer still answers ListRuns")
    check(sc_srv.stop(timeout=30) == 0, "files: scorer: SIGTERM, exit 0")
    check(pr_srv.stop(timeout=30) == 0, "files: pruner: SIGTERM, exit 0")


# ---------------------------------------------------------------------------------------

def test_services(a):
    import grpc
    import health_pb2 as hp
    import health_pb2_grpc as hg
    import reap_pb2 as rp
    import reap_pb2_grpc as rg

    fx = fixture(a)
    # The pruner reads its token from a .env file (and the scorer from the flag).
    envf = os.path.join(a.work, "pruner.env")
    with open(envf, "w") as f:
        f.write(f"# pruner settings\nREAP_TOKEN={TOKEN}\nREAP_PRUNE_RATIO=0.25\n")
    # Every run of this scorer waits before each layer for a byte of the gate.
    gate = Gate(os.path.join(a.work, "gate-scorer"))
    sc_srv = start_scorer(a, fx, extra=["--token", TOKEN, "--max-runs", "1",
                                        "--max-queued-runs", "1", "--max-message-mb", "1",
                                        "--grace-ms", "3000", "--layer-gate", gate.path])
    pr_srv = start_pruner(a, fx, extra=["--env-file", envf, "--max-message-mb", "1"])
    auth = [("authorization", f"Bearer {TOKEN}")]
    sch = grpc.insecure_channel(sc_srv.addr)
    prch = grpc.insecure_channel(pr_srv.addr)
    sc, pr = rg.ScorerStub(sch), rg.PrunerStub(prch)
    S = hp.HealthCheckResponse

    check("authentication: bearer token" in sc_srv.logtext() and
          "authentication: bearer token" in pr_srv.logtext(),
          "servers with a token (flag; .env file) log that calls need it")

    # ---- health ----
    for ch, svc in ((sch, "reap.v1.Scorer"), (prch, "reap.v1.Pruner")):
        h = hg.HealthStub(ch)
        check(h.Check(hp.HealthCheckRequest(service=""), timeout=5).status == S.SERVING and
              h.Check(hp.HealthCheckRequest(service=svc), timeout=5).status == S.SERVING,
              f"health Check '' and {svc}: SERVING (no token needed)")
        w = h.Watch(hp.HealthCheckRequest(service=svc), timeout=10)
        check(next(w).status == S.SERVING, f"health Watch {svc}: SERVING")
        w.cancel()

    # ---- Score: the whole stream ----
    t0 = time.time()
    gate.allow(6)
    evs, code = events(sc.Score(rp.ScoreRequest(model_path="m", calib_path="c1.jsonl"),
                                metadata=auth, timeout=120), queued=True)
    kinds = [k for k, _ in evs]
    L = evs[1][1].n_layers if len(evs) > 1 and kinds[1] == "accepted" else 0
    check(code == grpc.StatusCode.OK and kinds == ["queued", "accepted", "tokenized"] +
          ["layer_done"] * L + ["finished"] and L == 6,
          f"Score streams queued, accepted, tokenized, {L} layer_done, finished "
          f"({time.time() - t0:.1f} s)")
    check(evs[0][1].position == 1 and evs[0][1].run_id == evs[1][1].run_id,
          "queued: position 1 on an idle server, the run id it is accepted with")
    evs = evs[1:]
    acc = evs[0][1]
    run1 = acc.run_id
    check(len(run1) == 32 and len(acc.model_id) == 64 and len(acc.calib_id) == 64 and
          acc.state == rp.RUN_STATE_RUNNING, "accepted: run_id, model_id, calib_id, RUNNING")
    tok = evs[1][1]
    check(tok.samples == 48 and tok.rows > 0 and tok.tokens > 0 and tok.seq_len == 64,
          f"tokenized: {tok.samples} samples, {tok.rows} rows, {tok.tokens} tokens")
    lds = [m for k, m in evs if k == "layer_done"]
    check([m.layer for m in lds] == list(range(L)) and lds[-1].layers_done == L and
          all(m.tokens_per_s > 0 and m.seconds > 0 for m in lds) and lds[0].eta_s > 0,
          "layer_done: every layer in order with seconds, tokens/s and ETA")
    model_id, calib1 = acc.model_id, acc.calib_id

    # ---- GetRun / ListRuns / ListModels / GetStats / WatchRun / CancelRun ----
    r = sc.GetRun(rp.GetRunRequest(run_id=run1), metadata=auth, timeout=10)
    check(r.state == rp.RUN_STATE_DONE and r.layers_done == L and len(r.layer_seconds) == L
          and r.tokens == tok.tokens and r.model_path.endswith("/models/m") and
          r.finished_unix_ns > r.started_unix_ns > 0, "GetRun: done, every layer timed")
    check(sc.GetRun(rp.GetRunRequest(run_id=run1[:8].upper()), metadata=auth,
                    timeout=10).run_id == run1, "GetRun by an 8-digit prefix (any case)")
    lr = sc.ListRuns(rp.ListRunsRequest(), metadata=auth, timeout=10)
    check(any(x.run_id == run1 for x in lr.runs), "ListRuns lists the run")
    lr = sc.ListRuns(rp.ListRunsRequest(model_id=model_id[:10], state=rp.RUN_STATE_DONE,
                                        limit=5), metadata=auth, timeout=10)
    check(len(lr.runs) == 1 and lr.runs[0].run_id == run1, "ListRuns by model and state")
    lm = sc.ListModels(rp.ListModelsRequest(), metadata=auth, timeout=10)
    mm = [m for m in lm.models if m.model_id == model_id]
    check(len(mm) == 1 and mm[0].n_layers == L and mm[0].n_experts == 16 and
          mm[0].top_k == 4 and list(mm[0].moe_layers) == list(range(L)) and
          mm[0].calibs[0].layers_scored == L and mm[0].calibs[0].calib_id == calib1,
          "ListModels: the model, its MoE layers and its calibration set")
    gs = sc.GetStats(rp.GetStatsRequest(model_id=model_id[:8]), metadata=auth, timeout=10)
    check(gs.model_id == model_id and list(gs.calib_ids) == [calib1] and
          len(gs.layers) == L and len(gs.stats_digest) == 64 and
          all(len(x.reap) == 16 and sum(x.count) == 4 * x.tokens for x in gs.layers),
          "GetStats: every MoE layer, counts sum to top_k x tokens")
    gs1 = sc.GetStats(rp.GetStatsRequest(model_id=model_id, calib_ids=[calib1[:12]],
                                         layers=[2]), metadata=auth, timeout=10)
    check(len(gs1.layers) == 1 and gs1.layers[0].layer == 2 and
          list(gs1.layers[0].reap) == list(gs.layers[2].reap),
          "GetStats: one layer of one calibration set (by prefix)")
    evs, code = events(sc.Score(rp.ScoreRequest(model_path="m", calib_path="c1.jsonl"),
                                metadata=auth, timeout=60))
    check(code == grpc.StatusCode.OK and [k for k, _ in evs] ==
          ["accepted", "tokenized", "finished"] and evs[0][1].already_scored,
          "Score of a complete pair: accepted{already_scored}, finished, no work")
    evs, code = events(sc.WatchRun(rp.WatchRunRequest(run_id=run1), metadata=auth,
                                   timeout=10))
    check(code == grpc.StatusCode.OK and [k for k, _ in evs if k != "tokenized"] ==
          ["accepted", "finished"] and evs[0][1].state == rp.RUN_STATE_DONE,
          "WatchRun of an ended run: accepted, finished")
    r = sc.CancelRun(rp.CancelRunRequest(run_id=run1), metadata=auth, timeout=10)
    check(r.state == rp.RUN_STATE_DONE, "CancelRun of an ended run: returned as it is")

    # ---- the client goes away mid-run; the run goes on; WatchRun re-attaches ----
    # The gate lets 2 layers through: the run then waits before layer 2 until the
    # watcher below has re-attached.
    gate.allow(2)
    evs, code = events(sc.Score(rp.ScoreRequest(model_path="m", calib_path="c2.jsonl"),
                                metadata=auth, timeout=120), stop_after=("layer_done", 2))
    run2 = evs[0][1].run_id
    g1 = sc.GetRun(rp.GetRunRequest(run_id=run2), metadata=auth, timeout=10)
    check(g1.state == rp.RUN_STATE_RUNNING and g1.layers_done == 2,
          f"client left after 2 layers: the run is still there, RUNNING "
          f"({g1.layers_done} layers, held by the gate)")
    w2 = sc.WatchRun(rp.WatchRunRequest(run_id=run2[:16]), metadata=auth, timeout=120)
    first = next(w2)
    gate.allow(L - 2)
    evs, code = events(w2)
    evs = [(first.WhichOneof("event"), getattr(first, first.WhichOneof("event")))] + evs
    kinds = [k for k, _ in evs]
    check(code == grpc.StatusCode.OK and kinds[0] == "accepted" and
          evs[0][1].layers_done == 2 and evs[0][1].state == rp.RUN_STATE_RUNNING and
          kinds[-1] == "finished" and kinds.count("layer_done") == L - 2,
          f"WatchRun re-attaches: accepted at {evs[0][1].layers_done}/{L} layers, live "
          f"layer events, finished")

    # ---- CancelRun: stops at the next layer boundary; scoring again resumes ----
    got, res = [], {}

    def follow():
        res["evs"], res["code"] = events(sc.Score(rp.ScoreRequest(model_path="m",
                                                                  calib_path="c3.jsonl"),
                                                  metadata=auth, timeout=120))
    # Two layers through the gate; the run then waits before layer 2, is cancelled
    # there, and one more byte lets it score layer 2, after which it stops.
    gate.allow(2)
    th = threading.Thread(target=follow)
    th.start()
    deadline = time.time() + 120
    run3 = None
    while time.time() < deadline and not run3:
        for x in sc.ListRuns(rp.ListRunsRequest(state=rp.RUN_STATE_RUNNING), metadata=auth,
                             timeout=10).runs:
            if x.layers_done >= 2:
                run3 = x.run_id
        time.sleep(0.05)
    c = sc.CancelRun(rp.CancelRunRequest(run_id=run3), metadata=auth, timeout=10)
    gate.allow(1)
    th.join(60)
    kinds = [k for k, _ in res["evs"]]
    check(res["code"] == grpc.StatusCode.CANCELLED and kinds[-1] == "error" and
          res["evs"][-1][1].code == grpc.StatusCode.CANCELLED.value[0],
          "CancelRun: the Score stream ends with an error event and CANCELLED")
    g3 = sc.GetRun(rp.GetRunRequest(run_id=run3), metadata=auth, timeout=10)
    lm = sc.ListModels(rp.ListModelsRequest(), metadata=auth, timeout=10)
    c3 = [cs for m in lm.models for cs in m.calibs if cs.calib_id == g3.calib_id]
    check(g3.state == rp.RUN_STATE_CANCELLED and g3.layers_done == 3 and
          c.layers_done == 2 and c3 and c3[0].layers_scored == g3.layers_done,
          f"cancelled at 2 layers, stopped after the next: {g3.layers_done} layers, each "
          f"of them committed")
    it3 = sc.Score(rp.ScoreRequest(model_path="m", calib_path="c3.jsonl"), metadata=auth,
                   timeout=120)
    first = next(it3)   # queued
    first = next(it3)   # accepted: start_layer tells how many layers it will score
    if first.WhichOneof("event") == "accepted":
        gate.allow(L - first.accepted.start_layer)
    evs, code = events(it3)
    evs = [("accepted", first.accepted)] + evs
    # The newest hidden-state checkpoint is the one before the last committed layer (a
    # stop skips the checkpoint of the layer it stops after): that layer is recomputed
    # and compared with its stored record.
    st3 = evs[0][1].start_layer if evs else -1
    check(code == grpc.StatusCode.OK and g3.layers_done - 1 <= st3 <= g3.layers_done and
          st3 >= 1 and len([1 for k, _ in evs if k == "layer_done"]) == L - st3,
          f"scoring again resumes from a checkpoint at layer {st3} ({g3.layers_done} "
          f"committed)")

    # ---- the queue (1 running + 1 queued) and duplicates; a queued run has its id ----
    # A run takes the only worker (read its stream until it is accepted) and waits before
    # its first layer at the gate while the queue is examined.
    it4 = sc.Score(rp.ScoreRequest(model_path="m", calib_path="c11.jsonl"), metadata=auth,
                   timeout=300)
    e4 = []
    for ev in it4:
        e4.append((ev.WhichOneof("event"), getattr(ev, ev.WhichOneof("event"))))
        if e4[-1][0] != "queued":
            break
    run4 = e4[-1][1].run_id if e4 and e4[-1][0] == "accepted" else ""
    it5 = sc.Score(rp.ScoreRequest(model_path="m", calib_path="c5.jsonl"), metadata=auth,
                   timeout=120)
    first5 = next(it5)
    k5 = first5.WhichOneof("event")
    run5 = first5.queued.run_id if k5 == "queued" else ""
    check(len(run4) == 32 and k5 == "queued" and re.fullmatch("[0-9a-f]{32}", run5) and
          first5.queued.position == 1 and run5 != run4,
          f"a run behind a running one: its first event is queued{{run_id {run5[:8]}..., "
          f"position {first5.queued.position if k5 == 'queued' else '-'}}} ({k5})")
    queued = [x for x in sc.ListRuns(rp.ListRunsRequest(), metadata=auth, timeout=10).runs
              if x.state == rp.RUN_STATE_QUEUED]
    check(len(queued) == 1 and queued[0].run_id == run5 and queued[0].queue_position == 1
          and queued[0].calib_path.endswith("c5.jsonl"),
          "ListRuns shows the queued run with its id and position")
    lq = sc.ListRuns(rp.ListRunsRequest(state=rp.RUN_STATE_QUEUED), metadata=auth,
                     timeout=10).runs
    check([x.run_id for x in lq] == [run5], "ListRuns state=QUEUED: that run only")
    # run4 and run5 were made milliseconds apart: 8 digits still name one of them.
    g5 = sc.GetRun(rp.GetRunRequest(run_id=run5[:8]), metadata=auth, timeout=10)
    check(g5.run_id == run5 and g5.state == rp.RUN_STATE_QUEUED and g5.layers_done == 0 and
          g5.queue_position == 1,
          "GetRun of the queued run by 8 digits (made just after the running one): QUEUED")
    w5 = sc.WatchRun(rp.WatchRunRequest(run_id=run5), metadata=auth, timeout=120)
    wfirst = next(w5)
    check(wfirst.WhichOneof("event") == "queued" and wfirst.queued.run_id == run5 and
          wfirst.queued.position == 1, "WatchRun of the queued run: queued{run_id, 1}")
    c6, d6 = code_of(lambda: next(sc.Score(rp.ScoreRequest(model_path="m",
                                                           calib_path="c6.jsonl"),
                                           metadata=auth, timeout=10)))
    check(c6 == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue full" in d6,
          f"third run with 1 running + 1 queued -> RESOURCE_EXHAUSTED ({d6})")
    cd, dd = code_of(lambda: next(sc.Score(rp.ScoreRequest(model_path="m",
                                                           calib_path="c11.jsonl"),
                                           metadata=auth, timeout=10)))
    check(cd == grpc.StatusCode.ALREADY_EXISTS and run4 in dd,
          f"the same request again -> ALREADY_EXISTS naming the run ({dd[:60]}...)")
    cd, dd = code_of(lambda: next(sc.Score(rp.ScoreRequest(model_path="m",
                                                           calib_path="c5.jsonl"),
                                           metadata=auth, timeout=10)))
    check(cd == grpc.StatusCode.ALREADY_EXISTS and run5 in dd and "queued" in dd,
          "the queued request again -> ALREADY_EXISTS naming the queued run")
    t = time.time()
    c5 = sc.CancelRun(rp.CancelRunRequest(run_id=run5), metadata=auth, timeout=10)
    e5, code5 = events(it5)
    ew, codew = events(w5)
    dt = time.time() - t
    g4 = sc.GetRun(rp.GetRunRequest(run_id=run4), metadata=auth, timeout=10)
    check(c5.run_id == run5 and c5.state == rp.RUN_STATE_CANCELLED and c5.layers_done == 0
          and "cancelled before it started" in c5.error and c5.queue_position == 0
          and c5.never_started and not g4.never_started,
          f"CancelRun of the queued run: CANCELLED at once, never_started ({c5.error})")
    CANC = grpc.StatusCode.CANCELLED
    check(code5 == CANC and [k for k, _ in e5] == ["error"] and
          e5[0][1].code == CANC.value[0] and codew == CANC and
          [k for k, _ in ew] == ["error"],
          f"its Score stream and its watcher end with an error event and CANCELLED "
          f"({dt:.2f} s after CancelRun)")
    check(g4.state == rp.RUN_STATE_RUNNING and g4.layers_done == 0,
          f"the running run is still held before its first layer ({g4.layers_done}/{L} "
          f"layers): the queued run ended without waiting for it")
    g5 = sc.GetRun(rp.GetRunRequest(run_id=run5), metadata=auth, timeout=10)
    ew, codew = events(sc.WatchRun(rp.WatchRunRequest(run_id=run5[:12]), metadata=auth,
                                   timeout=10))
    check(g5.state == rp.RUN_STATE_CANCELLED and codew == CANC and
          [k for k, _ in ew] == ["error"], "GetRun / WatchRun of it afterwards: CANCELLED")
    # Its place in the queue is free again: the next run is queued at position 1.
    it6 = sc.Score(rp.ScoreRequest(model_path="m", calib_path="c6.jsonl"), metadata=auth,
                   timeout=120)
    f6 = next(it6)
    check(f6.WhichOneof("event") == "queued" and f6.queued.position == 1,
          "the cancelled run left the queue: a new run is queued at position 1")
    gate.allow(L)   # the first run's layers
    r4, code4 = events(it4)
    kinds4 = [k for k, _ in e4 + r4]
    check(code4 == grpc.StatusCode.OK and kinds4 == ["queued", "accepted", "tokenized"] +
          ["layer_done"] * L + ["finished"] and e4[0][1].run_id == run4,
          "the first run is unaffected: every layer, finished")
    gate.allow(L)   # the queued run's layers
    e6, c6 = events(it6)
    check(c6 == grpc.StatusCode.OK and e6[-1][0] == "finished" and gate.wait_taken(),
          "the queued run starts when the running one ends")

    # ---- pruner ----
    ks = pr.ComputeKeepSet(rp.KeepSetRequest(model_id=model_id[:8], params=rp.PruneParams(
        ratio=0.25, calib_ids=[calib1])), metadata=auth, timeout=10)
    check(ks.n_experts == 16 and ks.n_keep == 12 and len(ks.layers) == L and
          all(len(x.keep) == 12 and len(x.pruned) == 4 and len(x.scores) == 16
              for x in ks.layers) and ks.criterion == rp.CRITERION_REAP and
          list(ks.calib_ids) == [calib1], "ComputeKeepSet: 16 -> 12 experts in every layer")
    # The keep set is the 12 best REAP scores of each layer (ties keep the lower id).
    want = [sorted(sorted(range(16), key=lambda e: (-x.reap[e], e))[:12])
            for x in gs.layers]
    check([list(x.keep) for x in ks.layers] == want,
          "ComputeKeepSet keeps the highest REAP scores of GetStats")
    ks2 = pr.ComputeKeepSet(rp.KeepSetRequest(model_id=model_id, params=rp.PruneParams(
        n_prune=5, criterion=rp.CRITERION_FREQUENCY, calib_ids=[calib1])), metadata=auth,
        timeout=10)
    check(ks2.n_keep == 11 and ks2.criterion == rp.CRITERION_FREQUENCY,
          "ComputeKeepSet: n_prune and another criterion")
    ksd = pr.ComputeKeepSet(rp.KeepSetRequest(model_id=model_id, params=rp.PruneParams(
        calib_ids=[calib1])), metadata=auth, timeout=10)
    check(ksd.n_keep == 12, "ComputeKeepSet: ratio from the server's .env (0.25)")
    # An explicit 0 (with its *_set flag) prunes nothing; it is not the server's default.
    for what, zp in (("ratio 0", dict(ratio=0, ratio_set=True)),
                     ("n_prune 0", dict(n_prune=0, n_prune_set=True))):
        ks0 = pr.ComputeKeepSet(rp.KeepSetRequest(model_id=model_id, params=rp.PruneParams(
            calib_ids=[calib1], **zp)), metadata=auth, timeout=10)
        check(ks0.n_experts == 16 and ks0.n_keep == 16 and len(ks0.layers) == L and
              all(list(x.keep) == list(range(16)) and not x.pruned for x in ks0.layers),
              f"ComputeKeepSet {what} (set): every expert kept, not the default 0.25")
    evs0, code0 = events(pr.Prune(rp.PruneRequest(
        model_path="m", output_path="p0", params=rp.PruneParams(
            ratio=0, ratio_set=True, calib_ids=[calib1])), metadata=auth, timeout=120))
    check(code0 == grpc.StatusCode.OK and evs0[0][0] == "accepted" and
          evs0[0][1].n_keep == 16 and evs0[-1][0] == "finished",
          "Prune ratio 0 (set): accepted 16 -> 16 experts, finished")
    if code0 == grpc.StatusCode.OK:
        with open(os.path.join(evs0[-1][1].output_path, "config.json")) as f:
            check(json.load(f)["text_config"]["num_experts"] == 16,
                  "Prune ratio 0: config.json keeps 16 experts")
    evs, code = events(pr.Prune(rp.PruneRequest(model_path="m", output_path="p1",
                                                params=rp.PruneParams(ratio=0.25,
                                                                      calib_ids=[calib1])),
                                metadata=auth, timeout=120))
    kinds = [k for k, _ in evs]
    check(code == grpc.StatusCode.OK and kinds[0] == "accepted" and "progress" in kinds and
          kinds[-1] == "finished" and evs[-1][1].is_signed and
          len(evs[-1][1].manifest_digest) == 64,
          f"Prune: accepted, progress, finished (signed) ({code}, events {kinds})")
    out1 = evs[-1][1].output_path
    with open(os.path.join(out1, "config.json")) as f:
        cfg = json.load(f)
    check(cfg["text_config"]["num_experts"] == 12, "pruned config.json: 12 experts")
    # The manifest's digests against Python's hashlib: outputs (hashed while the rewrite
    # went on, SHA-256 from libcrypto) and inputs (the identity's cached digests).
    with open(os.path.join(out1, "reap-manifest.json")) as f:
        man = json.load(f)

    def digests(path):
        b2, sh = hashlib.blake2b(digest_size=32), hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                b2.update(chunk)
                sh.update(chunk)
        return os.path.getsize(path), b2.hexdigest(), sh.hexdigest()
    outs_ok = all(digests(os.path.join(out1, e["path"])) ==
                  (e["size"], e["blake2b_256"], e["sha256"]) for e in man["files"])
    mdir = os.path.join(fx.models, "m")
    ins_ok = sorted(e["path"] for e in man["inputs"]["files"]) == sorted(
        n for n in os.listdir(mdir) if n.endswith(".safetensors") or
        n in ("config.json", "model.safetensors.index.json")) and all(
        digests(os.path.join(mdir, e["path"]))[:2] == (e["size"], e["blake2b_256"])
        for e in man["inputs"]["files"])
    check(outs_ok and ins_ok and len(man["files"]) >= 4,
          f"manifest digests equal hashlib's: {len(man['files'])} output files "
          f"(BLAKE2b-256, SHA-256), {len(man['inputs']['files'])} input files")
    v = pr.Verify(rp.VerifyRequest(output_path="p1"), metadata=auth, timeout=60)
    check(v.ok and v.signature_ok and v.files_checked >= 4 and v.model_id == model_id and
          list(v.calib_ids) == [calib1] and v.n_keep == 12 and abs(v.ratio - 0.25) < 1e-12 and
          v.manifest_digest == evs[-1][1].manifest_digest,
          "Verify: ok with the server's key, manifest fields")
    v = pr.Verify(rp.VerifyRequest(output_path=out1, public_key=fx.pub_text, skip_rehash=True),
                  metadata=auth, timeout=60)
    check(v.ok and v.signature_ok, "Verify: a client's public key, sizes only")
    v = pr.Verify(rp.VerifyRequest(output_path="p1", public_key=fx.other_pub), metadata=auth,
                  timeout=60)
    check(not v.ok and not v.signature_ok and v.problems, "Verify with another key: not ok")
    shard = sorted(f for f in os.listdir(out1) if f.endswith(".safetensors"))[0]
    sp = os.path.join(out1, shard)
    with open(sp, "r+b") as f:
        f.seek(200)
        b = f.read(1)
        f.seek(200)
        f.write(bytes([b[0] ^ 1]))
    v = pr.Verify(rp.VerifyRequest(output_path="p1"), metadata=auth, timeout=60)
    check(not v.ok and v.signature_ok and any(p.file == shard for p in v.problems),
          f"Verify after a flipped byte: not ok, the problem names {shard}")
    with open(sp, "r+b") as f:
        f.seek(200)
        f.write(b)
    # The problem's file is the name itself, whatever it holds (a space, ": "): typed by the
    # check, not cut out of the message text.
    odd = os.path.join(out1, "my notes: v2.txt")
    with open(odd, "w") as f:
        f.write("extra\n")
    v = pr.Verify(rp.VerifyRequest(output_path="p1"), metadata=auth, timeout=60)
    check(not v.ok and any(p.file == "my notes: v2.txt" and
                           p.message == "extra file, not in the manifest" for p in v.problems),
          f"Verify: an extra file with a space in its name is named whole "
          f"({[(p.file, p.message) for p in v.problems]})")
    os.unlink(odd)

    # ---- the keep-set size, one rule: E = 100, ratios with E x ratio just below an
    # integer; the Prune's accepted event announces what the keep set keeps ----
    gate.allow(1)
    evs, code = events(sc.Score(rp.ScoreRequest(model_path="m100", calib_path="c1.jsonl"),
                                metadata=auth, timeout=120))
    check(code == grpc.StatusCode.OK and evs[-1][0] == "finished", "m100 (E = 100) scored")
    m100 = evs[0][1].model_id if evs else ""
    for r in (0.29, 0.57, 0.58):
        want = 100 - round(100 * r)
        ksr = pr.ComputeKeepSet(rp.KeepSetRequest(model_id=m100, params=rp.PruneParams(
            ratio=r)), metadata=auth, timeout=30)
        evr, coder = events(pr.Prune(rp.PruneRequest(
            model_path="m100", output_path=f"p100-{r}", params=rp.PruneParams(ratio=r)),
            metadata=auth, timeout=120))
        acc_keep = evr[0][1].n_keep if evr and evr[0][0] == "accepted" else -1
        cfg_keep = -1
        if coder == grpc.StatusCode.OK:
            with open(os.path.join(evr[-1][1].output_path, "config.json")) as f:
                cfg_keep = json.load(f)["text_config"]["num_experts"]
        check(ksr.n_keep == want and acc_keep == want and cfg_keep == want and
              all(len(x.keep) == want for x in ksr.layers),
              f"E = 100, ratio {r}: keep set {ksr.n_keep}, Prune accepted {acc_keep}, "
              f"written config {cfg_keep} experts (want {want})")

    # ---- bad requests: each with its code; the servers stay up ----
    raw = lambda ch, m: ch.unary_unary(m, request_serializer=lambda x: x,
                                       response_deserializer=lambda x: x)
    P = rp.PruneParams
    bad = [
        ("Score without model_path", lambda: next(sc.Score(rp.ScoreRequest(
            calib_path="c1.jsonl"), metadata=auth, timeout=10)), "INVALID_ARGUMENT",
         "model_path"),
        ("Score without calib_path", lambda: next(sc.Score(rp.ScoreRequest(
            model_path="m"), metadata=auth, timeout=10)), "INVALID_ARGUMENT", "calib_path"),
        ("Score model outside the roots", lambda: next(sc.Score(rp.ScoreRequest(
            model_path=os.path.join(fx.outside, "m"), calib_path="c1.jsonl"), metadata=auth,
            timeout=10)), "PERMISSION_DENIED", "model_path"),
        ("Score model path with ..", lambda: next(sc.Score(rp.ScoreRequest(
            model_path="m/../../outside/m", calib_path="c1.jsonl"), metadata=auth,
            timeout=10)), "PERMISSION_DENIED", "model_path"),
        ("Score model symlink escaping the root", lambda: next(sc.Score(rp.ScoreRequest(
            model_path="escape", calib_path="c1.jsonl"), metadata=auth, timeout=10)),
         "PERMISSION_DENIED", "model_path"),
        ("Score calibration symlink escaping the root", lambda: next(sc.Score(
            rp.ScoreRequest(model_path="m", calib_path="escape.jsonl"), metadata=auth,
            timeout=10)), "PERMISSION_DENIED", "calib_path"),
        ("Score /etc/passwd as calibration", lambda: next(sc.Score(rp.ScoreRequest(
            model_path="m", calib_path="/etc/passwd"), metadata=auth, timeout=10)),
         "PERMISSION_DENIED", "calib_path"),
        ("Score seed without shuffle", lambda: next(sc.Score(rp.ScoreRequest(
            model_path="m", calib_path="c9.jsonl", seed=5), metadata=auth, timeout=10)),
         "INVALID_ARGUMENT", "seed: only applies with shuffle"),
        ("Score tokenizer outside the model roots", lambda: next(sc.Score(rp.ScoreRequest(
            model_path="m", calib_path="c9.jsonl", tokenizer_path="/etc"), metadata=auth,
            timeout=10)), "PERMISSION_DENIED", "tokenizer_path"),
        ("Score nonexistent model", lambda: next(sc.Score(rp.ScoreRequest(
            model_path="nope", calib_path="c1.jsonl"), metadata=auth, timeout=10)),
         "NOT_FOUND", "model_path"),
        ("Score model directory without config.json", lambda: next(sc.Score(
            rp.ScoreRequest(model_path="empty", calib_path="c1.jsonl"), metadata=auth,
            timeout=10)), "NOT_FOUND", "config.json"),
        ("Score malformed config.json", lambda: next(sc.Score(rp.ScoreRequest(
            model_path="bad", calib_path="c1.jsonl"), metadata=auth, timeout=10)),
         "FAILED_PRECONDITION", "config.json"),
        ("Score a calibration file that is not JSON Lines (fails in the run)",
         lambda: list(sc.Score(rp.ScoreRequest(model_path="m", calib_path="garbage.jsonl"),
                               metadata=auth, timeout=60)), "FAILED_PRECONDITION",
         "garbage.jsonl:2"),
        ("Score calibration path is a directory", lambda: next(sc.Score(rp.ScoreRequest(
            model_path="m", calib_path=fx.calib), metadata=auth, timeout=10)),
         "INVALID_ARGUMENT", "calib_path"),
        ("Score seq_len too large", lambda: next(sc.Score(rp.ScoreRequest(
            model_path="m", calib_path="c1.jsonl", seq_len=1 << 24), metadata=auth,
            timeout=10)), "INVALID_ARGUMENT", "seq_len"),
        ("Score unknown backend", lambda: next(sc.Score(rp.ScoreRequest(
            model_path="m", calib_path="c1.jsonl", backend="tpu"), metadata=auth,
            timeout=10)), "INVALID_ARGUMENT", "backend"),
        ("GetRun malformed id", lambda: sc.GetRun(rp.GetRunRequest(run_id="xyz-not-hex"),
                                                  metadata=auth, timeout=10),
         "INVALID_ARGUMENT", "run_id"),
        ("GetRun prefix shorter than 8", lambda: sc.GetRun(rp.GetRunRequest(run_id=run1[:5]),
                                                           metadata=auth, timeout=10),
         "INVALID_ARGUMENT", "run_id"),
        ("GetRun unknown run", lambda: sc.GetRun(rp.GetRunRequest(run_id="0" * 32),
                                                 metadata=auth, timeout=10),
         "NOT_FOUND", "run_id"),
        ("WatchRun unknown run", lambda: next(sc.WatchRun(rp.WatchRunRequest(
            run_id="ffffffff"), metadata=auth, timeout=10)), "NOT_FOUND", "run_id"),
        ("CancelRun without run_id", lambda: sc.CancelRun(rp.CancelRunRequest(),
                                                          metadata=auth, timeout=10),
         "INVALID_ARGUMENT", "run_id"),
        ("ListRuns unknown state", lambda: sc.ListRuns(rp.ListRunsRequest(state=42),
                                                       metadata=auth, timeout=10),
         "INVALID_ARGUMENT", "state"),
        ("GetStats unknown model", lambda: sc.GetStats(rp.GetStatsRequest(
            model_id="0123456789abcdef"), metadata=auth, timeout=10), "NOT_FOUND", "model_id"),
        ("GetStats layer that is not a MoE layer", lambda: sc.GetStats(rp.GetStatsRequest(
            model_id=model_id, layers=[99]), metadata=auth, timeout=10), "INVALID_ARGUMENT",
         "layers"),
        ("GetStats calibration set of no statistics", lambda: sc.GetStats(
            rp.GetStatsRequest(model_id=model_id, calib_ids=["abcdef0123456789"]),
            metadata=auth, timeout=10), "NOT_FOUND", "calib_ids"),
        ("ComputeKeepSet ratio 1.5", lambda: pr.ComputeKeepSet(rp.KeepSetRequest(
            model_id=model_id, params=P(ratio=1.5)), metadata=auth, timeout=10),
         "INVALID_ARGUMENT", "ratio"),
        ("ComputeKeepSet negative ratio", lambda: pr.ComputeKeepSet(rp.KeepSetRequest(
            model_id=model_id, params=P(ratio=-0.1)), metadata=auth, timeout=10),
         "INVALID_ARGUMENT", "ratio"),
        ("ComputeKeepSet NaN ratio", lambda: pr.ComputeKeepSet(rp.KeepSetRequest(
            model_id=model_id, params=P(ratio=math.nan)), metadata=auth, timeout=10),
         "INVALID_ARGUMENT", "ratio"),
        ("ComputeKeepSet without params", lambda: pr.ComputeKeepSet(rp.KeepSetRequest(
            model_id=model_id), metadata=auth, timeout=10), "INVALID_ARGUMENT", "params"),
        ("ComputeKeepSet leaving fewer than top_k experts", lambda: pr.ComputeKeepSet(
            rp.KeepSetRequest(model_id=model_id, params=P(n_prune=14)), metadata=auth,
            timeout=10), "FAILED_PRECONDITION", ""),
        ("ComputeKeepSet n_prune = the model's experts", lambda: pr.ComputeKeepSet(
            rp.KeepSetRequest(model_id=model_id, params=P(n_prune=16)), metadata=auth,
            timeout=10), "FAILED_PRECONDITION", "n_prune 16 is not below the 16"),
        ("ComputeKeepSet n_prune far above any int (named as sent)",
         lambda: pr.ComputeKeepSet(rp.KeepSetRequest(model_id=model_id, params=P(
             n_prune=4000000000)), metadata=auth, timeout=10), "FAILED_PRECONDITION",
         "n_prune 4000000000 is not below"),
        ("Prune n_prune far above any int (named as sent)", lambda: next(pr.Prune(
            rp.PruneRequest(model_path="m", output_path="p-big", params=P(
                n_prune=3000000000)), metadata=auth, timeout=30)), "FAILED_PRECONDITION",
         "n_prune 3000000000 is not below"),
        ("ComputeKeepSet both ratio and n_prune", lambda: pr.ComputeKeepSet(
            rp.KeepSetRequest(model_id=model_id, params=P(ratio=0.25, n_prune=3)),
            metadata=auth, timeout=10), "INVALID_ARGUMENT", "not both"),
        ("ComputeKeepSet ratio 0 and n_prune 0 both set", lambda: pr.ComputeKeepSet(
            rp.KeepSetRequest(model_id=model_id, params=P(ratio_set=True, n_prune_set=True)),
            metadata=auth, timeout=10), "INVALID_ARGUMENT", "not both"),
        ("ComputeKeepSet unknown criterion", lambda: pr.ComputeKeepSet(rp.KeepSetRequest(
            model_id=model_id, params=P(ratio=0.2, criterion=99)), metadata=auth, timeout=10),
         "INVALID_ARGUMENT", "criterion"),
        ("Prune output that exists", lambda: next(pr.Prune(rp.PruneRequest(
            model_path="m", output_path="p1", params=P(ratio=0.25)), metadata=auth,
            timeout=10)), "ALREADY_EXISTS", "output_path"),
        ("Prune output outside the roots", lambda: next(pr.Prune(rp.PruneRequest(
            model_path="m", output_path=os.path.join(fx.outside, "p"), params=P(ratio=0.25)),
            metadata=auth, timeout=10)), "PERMISSION_DENIED", "output_path"),
        ("Prune output with ..", lambda: next(pr.Prune(rp.PruneRequest(
            model_path="m", output_path="../outside/p", params=P(ratio=0.25)), metadata=auth,
            timeout=10)), "PERMISSION_DENIED", "output_path"),
        ("Prune a model that was never scored", lambda: next(pr.Prune(rp.PruneRequest(
            model_path="m2", output_path="p2", params=P(ratio=0.25)), metadata=auth,
            timeout=30)), "NOT_FOUND", "model"),
        ("Verify a directory without a manifest", lambda: pr.Verify(rp.VerifyRequest(
            output_path="m"), metadata=auth, timeout=10), "NOT_FOUND", "reap-manifest.json"),
        ("Verify with a malformed public key", lambda: pr.Verify(rp.VerifyRequest(
            output_path="p1", public_key="RWnotakey"), metadata=auth, timeout=10),
         "INVALID_ARGUMENT", "public_key"),
        ("Verify with a file path as public key", lambda: pr.Verify(rp.VerifyRequest(
            output_path="p1", public_key=os.path.join(a.work, "k.pub")), metadata=auth,
            timeout=10), "INVALID_ARGUMENT", "public_key"),
        ("garbage payload (scorer)", lambda: raw(sch, "/reap.v1.Scorer/GetRun")(
            b"\xff\xff\xff\xff\xff", metadata=auth, timeout=10), "INVALID_ARGUMENT",
         "GetRunRequest"),
        ("garbage payload (pruner)", lambda: raw(prch, "/reap.v1.Pruner/Verify")(
            b"\x0a\x10abc", metadata=auth, timeout=10), "INVALID_ARGUMENT", "VerifyRequest"),
        ("unknown method", lambda: raw(sch, "/reap.v1.Scorer/DropEverything")(
            b"", metadata=auth, timeout=10), "UNIMPLEMENTED", "DropEverything"),
        ("unknown service", lambda: raw(prch, "/reap.v2.Pruner/Prune")(
            b"", metadata=auth, timeout=10), "UNIMPLEMENTED", ""),
        ("oversized message (2 MiB, limit 1 MiB)", lambda: next(sc.Score(rp.ScoreRequest(
            model_path="m" * (2 << 20), calib_path="c1.jsonl"), metadata=auth, timeout=10)),
         "RESOURCE_EXHAUSTED", ""),
        ("no token", lambda: sc.ListModels(rp.ListModelsRequest(), timeout=10),
         "UNAUTHENTICATED", ""),
        ("wrong token", lambda: pr.Verify(rp.VerifyRequest(output_path="p1"), metadata=[
            ("authorization", "Bearer nope")], timeout=10), "UNAUTHENTICATED", ""),
    ]
    kinds_ok = 0
    for name, fn, want, needle in bad:
        c, d = code_of(fn)
        ok = c.name == want and needle.lower() in d.lower()
        kinds_ok += ok
        check(ok, f"bad request: {name} -> {c.name} ({d[:90]})")
    check(kinds_ok >= 20, f"{kinds_ok} kinds of bad request answered with the right code")
    for srv, ch in ((sc_srv, sch), (pr_srv, prch)):
        check(srv.alive() and hg.HealthStub(ch).Check(hp.HealthCheckRequest(), timeout=5)
              .status == S.SERVING, f"{srv.name} still up and SERVING after the bad requests")
    # A normal call still works after all of it.
    check(len(sc.ListRuns(rp.ListRunsRequest(), metadata=auth, timeout=10).runs) >= 5,
          "scorer answers normally afterwards")

    # ---- SIGTERM during a run ----
    watch_seen = []

    def watcher():
        try:
            for m in hg.HealthStub(grpc.insecure_channel(sc_srv.addr)).Watch(
                    hp.HealthCheckRequest(service="reap.v1.Scorer"), timeout=60):
                watch_seen.append(m.status)
        except grpc.RpcError:
            pass
    wt = threading.Thread(target=watcher)
    wt.start()
    gate.allow(2)   # the run waits before layer 2 when the SIGTERM comes
    it = sc.Score(rp.ScoreRequest(model_path="m", calib_path="c7.jsonl"), metadata=auth,
                  timeout=120)
    seen, term, evs, code = 0, None, [], grpc.StatusCode.OK
    try:
        for ev in it:
            k = ev.WhichOneof("event")
            evs.append((k, getattr(ev, k)))
            if k == "layer_done" and term is None:
                seen += 1
                if seen == 2:
                    term = time.time()
                    sc_srv.p.send_signal(signal.SIGTERM)
                    # Once the server has told its runs to stop, layer 2 is let through:
                    # it is scored and committed, then the run stops.
                    wait_log(sc_srv, "shutting down:")
                    gate.allow(1)
    except grpc.RpcError as e:
        code, detail = e.code(), e.details()
    run7 = evs[0][1].run_id
    rc = sc_srv.stop()
    wt.join(10)
    check(code == grpc.StatusCode.UNAVAILABLE and evs[-1][0] == "error" and
          "shutting down" in detail, f"SIGTERM: the stream ends UNAVAILABLE ({detail[:70]})")
    check(rc == 0 and "shut down cleanly" in sc_srv.logtext(),
          f"SIGTERM: exit status {rc} after {time.time() - term:.1f} s, clean shutdown logged")
    check(S.NOT_SERVING in watch_seen, f"SIGTERM: health Watch saw NOT_SERVING ({watch_seen})")
    # --resume 0: the interrupted run waits for a client to score the pair again.
    sc_srv = start_scorer(a, fx, name="scorer2", extra=["--token", TOKEN, "--resume", "0"])
    sch = grpc.insecure_channel(sc_srv.addr)
    sc = rg.ScorerStub(sch)
    g7 = sc.GetRun(rp.GetRunRequest(run_id=run7), metadata=auth, timeout=10)
    lm = sc.ListModels(rp.ListModelsRequest(), metadata=auth, timeout=10)
    c7 = [cs for m in lm.models for cs in m.calibs if cs.calib_id == g7.calib_id]
    check(g7.state == rp.RUN_STATE_INTERRUPTED and g7.layers_done == seen + 1 and
          len(g7.layer_seconds) == g7.layers_done and c7 and
          c7[0].layers_scored == g7.layers_done and "interrupted" in g7.error,
          f"after a restart: run interrupted with {g7.layers_done} layers committed (the "
          f"client saw {seen}: the layer in progress was committed)")
    evs, code = events(sc.Score(rp.ScoreRequest(model_path="m", calib_path="c7.jsonl"),
                                metadata=auth, timeout=120))
    st7 = evs[0][1].start_layer if evs else -1
    check(code == grpc.StatusCode.OK and g7.layers_done - 1 <= st7 <= g7.layers_done and
          st7 >= 1 and evs[-1][0] == "finished",
          f"the restarted server resumes from a checkpoint at layer {st7}")
    def equals_oneshot(sc, cal, calib_id):
        """The store's statistics of (m, calib_id) bit-identical to a one-shot
        `reap-scorer run` of m on `cal` without a store."""
        one = os.path.join(a.work, "oneshot-" + cal.replace(".jsonl", ".json"))
        run([os.path.join(a.bin, "reap-scorer"), "run", "--model",
             os.path.join(fx.models, "m"), "--calib", os.path.join(fx.calib, cal),
             "--seq-len", "64", "--backend", "cpu", "--threads", "1", "--quiet",
             "--stats-json", one])
        with open(one) as f:
            ref = json.load(f)
        g = sc.GetStats(rp.GetStatsRequest(model_id=model_id, calib_ids=[calib_id]),
                        metadata=auth, timeout=10)
        return len(g.layers) == len(ref["layers"]) and all(
            list(x.count) == r["count"] and list(x.sum_gate_norm) == r["sum_gate_norm"] and
            list(x.sum_norm) == r["sum_norm"] and list(x.sum_gate) == r["sum_gate"]
            for x, r in zip(g.layers, ref["layers"]))
    check(equals_oneshot(sc, "c7.jsonl", g7.calib_id),
          "interrupted + resumed statistics equal a one-shot run bit for bit")

    # ---- a restarted server resumes interrupted runs by itself (--resume 1, the default) ----
    # SIGTERM (a clean shutdown) and SIGKILL (a crash) after 2 layers; no client scores
    # the pair again: the new server submits the run again from its record. With the
    # SIGTERM, a second run waits in the queue: it comes back under its own run id.
    sc_srv.stop()   # scorer2 ran with --resume 0
    gate = Gate(os.path.join(a.work, "gate-scorer3"))
    sc_srv = start_scorer(a, fx, name="scorer3", extra=["--token", TOKEN, "--layer-gate",
                                                        gate.path])
    sch = grpc.insecure_channel(sc_srv.addr)
    sc = rg.ScorerStub(sch)
    for sig, cal in ((signal.SIGTERM, "c4.jsonl"), (signal.SIGKILL, "c8.jsonl")):
        gate.allow(2)   # the run waits before layer 2 when the signal comes
        it = sc.Score(rp.ScoreRequest(model_path="m", calib_path=cal), metadata=auth,
                      timeout=120)
        seen, old, qid, qit = 0, "", "", None
        try:
            for ev in it:
                k = ev.WhichOneof("event")
                if k == "accepted":
                    old = ev.accepted.run_id
                    if sig == signal.SIGTERM:
                        qit = sc.Score(rp.ScoreRequest(model_path="m", calib_path="c10.jsonl"),
                                       metadata=auth, timeout=120)
                        q0 = next(qit)
                        qid = q0.queued.run_id if q0.WhichOneof("event") == "queued" else ""
                        pend = os.listdir(os.path.join(a.work, "store", "pending"))
                if k == "layer_done":
                    seen += 1
                    if seen == 2:
                        sc_srv.p.send_signal(sig)
                        if sig == signal.SIGTERM:   # layer 2 is scored, then it stops
                            wait_log(sc_srv, "shutting down:")
                            gate.allow(1)
        except grpc.RpcError:
            pass
        sc_srv.stop()
        gate.release()
        # The server after the SIGTERM is gated too (the SIGKILL run is scored on it): its
        # resumed runs are fed a byte at a time while they are polled.
        gated = sig == signal.SIGTERM
        gate = Gate(os.path.join(a.work, f"gate-{sig.name.lower()}"))
        sc_srv = start_scorer(a, fx, name=f"scorer-{sig.name.lower()}",
                              extra=["--token", TOKEN] +
                              (["--layer-gate", gate.path] if gated else []))
        sch = grpc.insecure_channel(sc_srv.addr)
        sc = rg.ScorerStub(sch)
        new, g, deadline = None, None, time.time() + 90
        while time.time() < deadline:
            if gated:
                gate.feed()
            g = sc.GetRun(rp.GetRunRequest(run_id=old), metadata=auth, timeout=10)
            m = re.search(r"resumed as run ([0-9a-f]{32})", g.error)
            n = sc.GetRun(rp.GetRunRequest(run_id=m.group(1)), metadata=auth,
                          timeout=10) if m else None
            if n and n.state in (rp.RUN_STATE_DONE, rp.RUN_STATE_FAILED):
                new = n
                break
            time.sleep(0.2)
        check(new is not None and new.state == rp.RUN_STATE_DONE and
              g.state == rp.RUN_STATE_INTERRUPTED and new.start_layer >= 1 and
              new.layers_done == new.n_layers and new.calib_id == g.calib_id and
              "resumes as run " + new.run_id in sc_srv.logtext(),
              f"{sig.name} after 2 layers, restart: run {old[:8]} resumed by the server as "
              f"run {new.run_id[:8] if new else '-'} from layer "
              f"{new.start_layer if new else '-'}, done, logged")
        if sig == signal.SIGTERM:
            qrun, deadline = None, time.time() + 90
            while qid and time.time() < deadline:
                gate.feed()
                qrun = sc.GetRun(rp.GetRunRequest(run_id=qid), metadata=auth, timeout=10)
                if qrun.state in (rp.RUN_STATE_DONE, rp.RUN_STATE_FAILED):
                    break
                time.sleep(0.2)
            gate.drain()
            left = os.listdir(os.path.join(a.work, "store", "pending"))
            check(qid and pend == [qid + ".json"] and qrun and
                  qrun.state == rp.RUN_STATE_DONE and qrun.layers_done == qrun.n_layers and
                  qrun.start_layer == 0 and left == [] and
                  f"run {qid} (not started before the restart) is queued again" in
                  sc_srv.logtext(),
                  f"a run queued at the SIGTERM (its request kept in store/pending) comes "
                  f"back under its own id {qid[:8]} and finishes; nothing left pending")
    check(new is not None and equals_oneshot(sc, "c8.jsonl", new.calib_id),
          "killed, resumed by the restarted server: statistics equal a one-shot run bit for bit")

    # ---- shuffle / seed / tokenizer_path in a Score request ----
    evs, code = events(sc.Score(rp.ScoreRequest(model_path="m", calib_path="c9.jsonl",
                                                max_samples=6, shuffle=True, seed=5),
                                metadata=auth, timeout=120))
    ids = {}
    for tag, extra in (("shuffled", ["--shuffle", "--seed", "5"]), ("plain", [])):
        out = os.path.join(a.work, f"oneshot-{tag}.json")
        run([os.path.join(a.bin, "reap-scorer"), "run", "--model",
             os.path.join(fx.models, "m"), "--calib", os.path.join(fx.calib, "c9.jsonl"),
             "--seq-len", "64", "--max-samples", "6", "--backend", "cpu", "--threads", "1",
             "--quiet", "--stats-json", out] + extra)
        with open(out) as f:
            ids[tag] = json.load(f)["calib_id"]
    check(code == grpc.StatusCode.OK and evs[0][0] == "accepted" and
          evs[0][1].calib_id == ids["shuffled"] != ids["plain"],
          "Score shuffle=True seed=5 scores the rows of `reap-scorer run --shuffle --seed 5`")

    for srv in (sc_srv, pr_srv):
        check(srv.stop() == 0, f"{srv.name}: SIGTERM, exit status 0")


def test_max_samples(a):
    """max_samples: not given -> the server's --max-samples; given (max_samples_set) 0 ->
    every sample; reapctl score --max-samples 0 sends the explicit 0."""
    import grpc
    import reap_pb2 as rp
    import reap_pb2_grpc as rg
    fx = fixture(a)
    srv = start_scorer(a, fx, name="scorer-samples", store="store-samples",
                       extra=["--max-samples", "5"])
    sc = rg.ScorerStub(grpc.insecure_channel(srv.addr))

    def samples(cal, **kw):
        evs, code = events(sc.Score(rp.ScoreRequest(model_path="m2", calib_path=cal, **kw),
                                    timeout=120))
        tok = [m for k, m in evs if k == "tokenized"]
        return tok[0].samples if code == grpc.StatusCode.OK and tok else -1
    n = samples("c1.jsonl")
    check(n == 5, f"max_samples not given: the server's --max-samples 5 ({n} samples)")
    n = samples("c2.jsonl", max_samples=0, max_samples_set=True)
    check(n == 48, f"max_samples 0, max_samples_set: every sample of the file ({n} of 48)")
    n = samples("c3.jsonl", max_samples=7)
    check(n == 7, f"max_samples 7 (a client before the flag): 7 ({n})")
    r = subprocess.run([os.path.join(a.bin, "reapctl"), "--scorer", srv.addr, "score",
                        "--model", "m2", "--calib", "c4.jsonl", "--max-samples", "0",
                        "--json"], capture_output=True, text=True, timeout=120)
    tok = [json.loads(x)["tokenized"] for x in r.stdout.splitlines()
           if x.startswith("{") and "tokenized" in json.loads(x)]
    check(r.returncode == 0 and tok and int(tok[0].get("samples", 0)) == 48,
          f"reapctl score --max-samples 0: every sample ({tok[0] if tok else r.stderr})")
    r = subprocess.run([os.path.join(a.bin, "reapctl"), "--scorer", srv.addr, "score",
                        "--model", "m2", "--calib", "c5.jsonl", "--json"],
                       capture_output=True, text=True, timeout=120)
    tok = [json.loads(x)["tokenized"] for x in r.stdout.splitlines()
           if x.startswith("{") and "tokenized" in json.loads(x)]
    check(r.returncode == 0 and tok and int(tok[0].get("samples", 0)) == 5,
          f"reapctl score without --max-samples: the server's default ({tok[0] if tok else r.stderr})")
    check(srv.stop() == 0, "scorer-samples: exit 0")


def test_tls(a):
    import grpc
    import health_pb2 as hp
    import health_pb2_grpc as hg
    import reap_pb2 as rp
    import reap_pb2_grpc as rg
    if not shutil.which("openssl"):
        print("SKIPPED TLS: openssl not found")
        return
    fx = fixture(a)
    cert = make_certs(os.path.join(a.work, "certs"))
    srv = start_pruner(a, fx, name="pruner-tls", store="store-tls",
                       extra=["--tls-cert", cert["server.pem"], "--tls-key",
                              cert["server.key"]])
    rd = lambda p: open(p, "rb").read()
    good = grpc.secure_channel(srv.addr, grpc.ssl_channel_credentials(rd(cert["ca.pem"])))
    c, d = code_of(lambda: rg.PrunerStub(good).Verify(rp.VerifyRequest(output_path="nope"),
                                                      timeout=10))
    check(c == grpc.StatusCode.PERMISSION_DENIED or c == grpc.StatusCode.NOT_FOUND,
          f"TLS: a client trusting the CA reaches the service ({c.name})")
    c, _ = code_of(lambda: hg.HealthStub(grpc.insecure_channel(srv.addr)).Check(
        hp.HealthCheckRequest(), timeout=5))
    check(c == grpc.StatusCode.UNAVAILABLE, "TLS mismatch: plaintext client -> UNAVAILABLE")
    other = grpc.secure_channel(srv.addr, grpc.ssl_channel_credentials(rd(cert["other.pem"])))
    c, _ = code_of(lambda: rg.PrunerStub(other).Verify(rp.VerifyRequest(output_path="p"),
                                                       timeout=5))
    check(c == grpc.StatusCode.UNAVAILABLE, "TLS mismatch: client trusting another CA -> "
                                            "UNAVAILABLE")
    r = subprocess.run([os.path.join(a.bin, "reapctl"), "--pruner", srv.addr, "--tls-ca",
                        cert["ca.pem"], "health", "pruner"], capture_output=True, text=True,
                       timeout=30)
    check(r.returncode == 0 and "SERVING" in r.stdout, "TLS: reapctl --tls-ca health")
    r = subprocess.run([os.path.join(a.bin, "reapctl"), "--pruner", srv.addr, "health",
                        "pruner", "--timeout-ms", "3000"], capture_output=True, text=True,
                       timeout=30)
    check(r.returncode == 24, f"TLS: reapctl without --tls-ca -> exit 24 (UNAVAILABLE), got "
                              f"{r.returncode}")
    check(srv.stop() == 0, "TLS server: exit 0")

    # mTLS on the real scorer: only clients with a certificate signed by the client CA.
    srv = start_scorer(a, fx, name="scorer-mtls", store="store-mtls",
                       extra=["--tls-cert", cert["server.pem"], "--tls-key",
                              cert["server.key"], "--tls-client-ca", cert["ca.pem"]])
    hc = lambda ch: code_of(lambda: hg.HealthStub(ch).Check(hp.HealthCheckRequest(),
                                                              timeout=5))
    with_cert = grpc.secure_channel(srv.addr, grpc.ssl_channel_credentials(
        rd(cert["ca.pem"]), rd(cert["client.key"]), rd(cert["client.pem"])))
    no_cert = grpc.secure_channel(srv.addr, grpc.ssl_channel_credentials(rd(cert["ca.pem"])))
    c, _ = hc(with_cert)
    check(c == grpc.StatusCode.OK, f"mTLS: a client with a certificate of the CA is served ({c.name})")
    c, _ = hc(no_cert)
    check(c == grpc.StatusCode.UNAVAILABLE, f"mTLS: a client without a certificate is refused ({c.name})")
    r = subprocess.run([os.path.join(a.bin, "reapctl"), "--scorer", srv.addr, "--tls-ca",
                        cert["ca.pem"], "--tls-cert", cert["client.pem"], "--tls-key",
                        cert["client.key"], "health", "scorer"], capture_output=True,
                       text=True, timeout=30)
    check(r.returncode == 0 and "SERVING" in r.stdout,
          f"mTLS: reapctl --tls-cert/--tls-key health (exit {r.returncode})")
    r = subprocess.run([os.path.join(a.bin, "reapctl"), "--scorer", srv.addr, "--tls-ca",
                        cert["ca.pem"], "health", "scorer", "--timeout-ms", "3000"],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 24, f"mTLS: reapctl without a client certificate -> exit 24, got "
                              f"{r.returncode}")
    for ch in (good, other, with_cert, no_cert):
        ch.close()
    check(srv.stop() == 0, "mTLS server: exit 0")


def test_config(a):
    fx = fixture(a)
    sc = os.path.join(a.bin, "reap-scorer")
    r = subprocess.run([sc, "serve", "--help"], capture_output=True, text=True, timeout=20)
    names = ("REAP_MODEL_PATH", "REAP_CALIBRATION_PATH", "REAP_MAX_SAMPLES",
             "REAP_BATCH_SIZE", "REAP_PARALLEL_LAYERS", "REAP_VRAM_GB", "REAP_VRAM_BUFFER",
             "REAP_STORE_PATH", "REAP_SCORER_LISTEN", "REAP_TOKEN", "REAP_TLS_CERT")
    check(r.returncode == 0 and all(n in r.stdout for n in names),
          "reap-scorer serve --help lists every environment variable")
    r = subprocess.run([os.path.join(a.bin, "reap-pruner"), "serve", "--help"],
                       capture_output=True, text=True, timeout=20)
    check(r.returncode == 0 and all(n in r.stdout for n in (
        "REAP_MODEL_PATH", "REAP_OUTPUT_PATH", "REAP_PRUNE_RATIO", "REAP_SIGNING_KEY",
        "REAP_PRUNER_LISTEN")), "reap-pruner serve --help lists its environment variables")
    r = subprocess.run([sc, "serve", "--store", os.path.join(a.work, "st-x"), "--calib-root",
                        fx.calib], capture_output=True, text=True, timeout=20)
    check(r.returncode == 2 and "--model-root" in r.stderr, "missing --model-root refused (2)")
    r = subprocess.run([sc, "serve", "--store", os.path.join(a.work, "st-x"), "--model-root",
                        "/nonexistent-root", "--calib-root", fx.calib], capture_output=True,
                       text=True, timeout=20)
    check(r.returncode == 2 and "nonexistent-root" in r.stderr, "missing root directory "
                                                                "refused (2)")
    # Everything from the environment / a .env file: the roots, the store, the listen
    # address of this service (port 0).
    envf = os.path.join(a.work, "scorer.env")
    with open(envf, "w") as f:
        f.write(f"REAP_MODEL_PATH={fx.models}:{fx.outside}\nREAP_CALIBRATION_PATH={fx.calib}\n"
                f"REAP_STORE_PATH={os.path.join(a.work, 'store-env')}\n"
                "REAP_SCORER_LISTEN=127.0.0.1:0\nREAP_BACKEND=cpu\n")
    e = {k: v for k, v in os.environ.items() if not k.startswith("REAP_")}
    e["REAP_ENV_FILE"] = envf
    p = subprocess.Popen([sc, "serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=e)
    line = p.stdout.readline()
    check(line.startswith("port "), f"scorer configured from a .env file only ({line.strip()})")
    p.send_signal(signal.SIGTERM)
    check(p.wait(30) == 0, ".env-configured scorer: exit 0")
    log = p.stderr.read()
    check("authentication: none (no --token or --token-file)" in log,
          "a scorer started without a token says in its log that authentication is off")
    p.stdout.close()
    p.stderr.close()

    # An empty token is an error naming where it came from, never "no authentication".
    base = {k: v for k, v in os.environ.items() if not k.startswith("REAP_")}
    envf = os.path.join(a.work, "empty-token.env")
    with open(envf, "w") as f:
        f.write("REAP_TOKEN=\n")
    pr = os.path.join(a.bin, "reap-pruner")
    args = ["serve", "--store", os.path.join(a.work, "st-tok"), "--model-root", fx.models,
            "--listen", "127.0.0.1:0"]
    for what, prog, extra, env, needle in (
            ("--token ''", sc, ["--calib-root", fx.calib, "--token", ""], base,
             "option --token was given an empty value"),
            ("--token-file ''", pr, ["--output-root", fx.out, "--token-file", ""], base,
             "option --token-file was given an empty value"),
            ("REAP_TOKEN='' in the environment", sc, ["--calib-root", fx.calib],
             dict(base, REAP_TOKEN=""), "environment variable REAP_TOKEN is set but empty"),
            ("REAP_TOKEN= in the .env file", pr, ["--output-root", fx.out,
                                                  "--env-file", envf], base,
             f"REAP_TOKEN is empty in the .env file '{envf}'")):
        try:
            r = subprocess.run([prog] + args + extra, capture_output=True, text=True,
                               timeout=60, env=env)
            rc, err = r.returncode, r.stderr
        except subprocess.TimeoutExpired:   # it started serving (killed by run())
            rc, err = None, "the server started"
        check(rc == 2 and needle in err,
              f"empty token ({what}) refused, exit {rc}: {err.strip()[:110]}")


# ---------------------------------------------------------------------------------------

def run_load(a):
    import grpc
    import health_pb2 as hp
    import health_pb2_grpc as hg
    import reap_pb2 as rp
    import reap_pb2_grpc as rg

    fx = fixture(a, layers=40, hidden=192, samples=48)
    L = 40
    # The streaming run is held by the gate before its last layer until the load is over:
    # it is provably still running then, however fast the machine.
    gate = Gate(os.path.join(a.work, "gate-load"))
    srv = start_scorer(a, fx, extra=["--token", TOKEN, "--workers", "4", "--layer-gate",
                                     gate.path])
    auth = [("authorization", f"Bearer {TOKEN}")]
    ch0 = grpc.insecure_channel(srv.addr)
    sc0 = rg.ScorerStub(ch0)
    # A complete model for GetStats / GetRun: the first calibration set, then the load
    # runs while a second set is scored.
    gate.allow(L)
    evs, code = events(sc0.Score(rp.ScoreRequest(model_path="m", calib_path="c1.jsonl"),
                                 metadata=auth, timeout=600))
    model_id, run1 = evs[0][1].model_id, evs[0][1].run_id
    check(code == grpc.StatusCode.OK, f"load: first run scored ({len(evs)} events)")
    for _ in range(50):
        sc0.GetStats(rp.GetStatsRequest(model_id=model_id), metadata=auth, timeout=10)
    base = []
    for i in range(400):
        t = time.perf_counter()
        sc0.GetRun(rp.GetRunRequest(run_id=run1), metadata=auth, timeout=10)
        base.append(time.perf_counter() - t)
    base.sort()
    b50, b99 = base[len(base) // 2] * 1e3, base[int(len(base) * 0.99)] * 1e3
    rss_idle = srv.rss_kb()

    stream = {"layers": 0, "during": 0, "end": None, "run_id": ""}
    load_on = threading.Event()

    def streamer():
        try:
            for ev in sc0.Score(rp.ScoreRequest(model_path="m", calib_path="c2.jsonl"),
                                metadata=auth, timeout=600):
                if ev.WhichOneof("event") == "accepted":
                    stream["run_id"] = ev.accepted.run_id
                if ev.WhichOneof("event") == "layer_done":
                    stream["layers"] += 1
                    stream["during"] += load_on.is_set()
            stream["end"] = "finished"
        except grpc.RpcError as e:
            stream["end"] = e.code().name
    gate.allow(2)
    st_thread = threading.Thread(target=streamer)
    st_thread.start()
    deadline = time.time() + 300
    while stream["layers"] < 2 and stream["end"] is None and time.time() < deadline:
        time.sleep(0.05)
    rss_before = srv.rss_kb()   # the run streaming, before the load
    anon_before = srv.rss_kb("RssAnon")

    n_clients, n_calls = a.clients, a.calls
    lat, errors, lock = [], [], threading.Lock()
    barrier = threading.Barrier(n_clients)

    def client(k):
        ch = grpc.insecure_channel(srv.addr)
        h, s = hg.HealthStub(ch), rg.ScorerStub(ch)
        calls = [lambda: h.Check(hp.HealthCheckRequest(), timeout=60),
                 lambda: s.ListRuns(rp.ListRunsRequest(limit=20), metadata=auth, timeout=60),
                 lambda: s.GetRun(rp.GetRunRequest(run_id=run1), metadata=auth, timeout=60),
                 lambda: s.GetStats(rp.GetStatsRequest(model_id=model_id), metadata=auth,
                                    timeout=60)]
        h.Check(hp.HealthCheckRequest(), timeout=60)
        my = []
        barrier.wait()
        for i in range(n_calls):
            t = time.perf_counter()
            try:
                calls[(i + k) % len(calls)]()
                my.append(time.perf_counter() - t)
            except grpc.RpcError as e:
                with lock:
                    errors.append(e.code().name)
        with lock:
            lat.extend(my)
        ch.close()

    ts = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    load_on.set()
    gate.allow(L - 3)   # the run scores during the load, up to its last layer
    t0 = time.perf_counter()
    [t.start() for t in ts]
    [t.join() for t in ts]
    wall = time.perf_counter() - t0
    load_on.clear()
    rss_after = srv.rss_kb()
    anon_after = srv.rss_kb("RssAnon")
    time.sleep(1.0)
    rss_after1 = srv.rss_kb()   # one second later, the clients' connections closed
    anon_after1 = srv.rss_kb("RssAnon")
    # Held before its last layer by the gate: the run is still running after the load.
    g2 = sc0.GetRun(rp.GetRunRequest(run_id=stream["run_id"] or "0" * 32), metadata=auth,
                    timeout=60)
    still_running = (stream["end"] is None and g2.state == rp.RUN_STATE_RUNNING and
                     g2.layers_done < L)
    gate.release()
    st_thread.join(600)
    time.sleep(0.5)
    rss_end = srv.rss_kb()      # the run finished, idle again
    lat.sort()
    total = n_clients * n_calls
    p50 = lat[len(lat) // 2] * 1e3 if lat else 0
    p99 = lat[int(len(lat) * 0.99)] * 1e3 if lat else 0
    check(not errors and len(lat) == total,
          f"load: {total} RPCs from {n_clients} clients, {len(errors)} failures "
          f"{sorted(set(errors))}")
    check(still_running and stream["end"] == "finished" and stream["layers"] == L,
          f"load: a scoring run was running through the load ({g2.layers_done} of {L} "
          f"layers at its end, the gate holding the last; {stream['during']} layer events "
          f"during the load) and then finished all {stream['layers']} layers")
    print(f"load: {total} RPCs ({n_clients} clients x {n_calls}: Health/Check, ListRuns, "
          f"GetRun, GetStats) in {wall:.1f} s = {total / wall:.0f} RPC/s; latency p50 "
          f"{p50:.2f} ms, p99 {p99:.2f} ms; scorer RSS idle {rss_idle / 1024:.1f} MiB, "
          f"run streaming {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB over the load "
          f"({rss_after1 / 1024:.1f} MiB 1 s later; the run's mmap'd weights grow it), "
          f"anonymous {anon_before / 1024:.1f} -> {anon_after / 1024:.1f} MiB "
          f"({anon_after1 / 1024:.1f} MiB 1 s later), "
          f"idle after {rss_end / 1024:.1f} MiB; layer events during the load "
          f"{stream['during']}; "
          f"baseline (1 client, sequential GetRun) p50 {b50:.2f} ms, p99 {b99:.2f} ms")
    with open(os.path.join(a.work, "load.txt"), "w") as f:
        f.write(f"clients {n_clients}\ncalls {n_calls}\ntotal {total}\n"
                f"failures {len(errors)}\nwall_s {wall:.2f}\nrps {total / wall:.0f}\n"
                f"p50_ms {p50:.2f}\np99_ms {p99:.2f}\nrss_idle_kib {rss_idle}\n"
                f"rss_before_kib {rss_before}\nrss_after_kib {rss_after}\n"
                f"rss_after_1s_kib {rss_after1}\nanon_before_kib {anon_before}\n"
                f"anon_after_kib {anon_after}\nanon_after_1s_kib {anon_after1}\n"
                f"rss_end_kib {rss_end}\nlayer_events_during {stream['during']}\n"
                f"baseline_p50_ms {b50:.2f}\nbaseline_p99_ms {b99:.2f}\n")
    check(srv.stop() == 0, "load: scorer exit 0")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    add_common_args(ap)
    a = ap.parse_args()
    a.bin = os.path.abspath(a.bin)
    fresh_work(a)
    gen_stubs(a, os.path.join(a.work, "pystubs"))
    if a.load:
        run_load(a)
    else:
        test_config(a)
        test_max_samples(a)
        test_services(a)
        test_files(a)
        test_tls(a)
    return summary()


if __name__ == "__main__":
    sys.exit(main())

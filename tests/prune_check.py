#!/usr/bin/python3
"""prune_check.py - check a pruned checkpoint from Python, independently of the C reader.

    prune_check.py --out PRUNED_DIR --orig ORIGINAL_DIR [--require-safetensors]

Names and shapes: with the real `safetensors` library when it can be imported (the test
script installs it into a venv when PyPI is reachable), otherwise with the oracle's own
safetensors reader (tests/oracle/reap_oracle.py); the line "reader: ..." says which.
Checks:
  - the index weight_map names exactly the tensors of the shards, each in its shard,
    total_size = sum of tensor bytes, __metadata__ format pt, data 8-byte aligned;
  - config: only the expert count changed; every MoE layer has a router [E', H], experts
    0..E'-1 (per expert) or fused tensors with dim 0 = E';
  - values (float64, oracle reader): router rows and expert weights of the pruned model
    equal the original's rows/slabs of the kept experts (reap_metadata.json
    experts_to_keep); every other tensor equal.
Exit status 0 when everything holds, 1 otherwise (each failure printed).
"""

import argparse
import json
import os
import re
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "oracle"))
import reap_oracle  # noqa: E402

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL " + msg)


def header(path):
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return n, json.loads(fh.read(n).decode("utf-8"))


def shard_names_shapes(path, use_lib):
    """{name: shape} of one shard, and its metadata."""
    if use_lib:
        from safetensors import safe_open
        with safe_open(path, framework="numpy") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}, f.metadata()
    _, h = header(path)
    meta = h.pop("__metadata__", None)
    return {k: list(v["shape"]) for k, v in h.items()}, meta


def lm_config(path):
    with open(path, encoding="utf-8") as fh:
        c = json.load(fh)
    return c, c.get("text_config", c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--orig", required=True)
    ap.add_argument("--require-safetensors", action="store_true")
    a = ap.parse_args()

    try:
        import safetensors  # noqa: F401
        use_lib = True
        print("reader: safetensors %s (the real library)" % safetensors.__version__)
    except ImportError:
        if a.require_safetensors:
            print("FAIL safetensors library not importable")
            return 1
        use_lib = False
        print("reader: tests/oracle/reap_oracle.py (safetensors library not installed)")

    cfg_o, lm_o = lm_config(os.path.join(a.orig, "config.json"))
    cfg_p, lm_p = lm_config(os.path.join(a.out, "config.json"))
    key = next(k for k in ("num_experts", "num_local_experts", "n_routed_experts") if k in lm_p)
    E, E2, H = lm_o[key], lm_p[key], lm_p["hidden_size"]
    lm_fix = dict(lm_p)
    lm_fix[key] = E
    if "text_config" in cfg_p:
        fixed = dict(cfg_p)
        fixed["text_config"] = lm_fix
    else:
        fixed = lm_fix
    if fixed != cfg_o:
        fail("config.json: a key other than %s changed" % key)
    with open(os.path.join(a.out, "reap_metadata.json"), encoding="utf-8") as fh:
        meta = json.load(fh)
    keep = {int(k): v for k, v in meta["experts_to_keep"].items()}
    if any(len(v) != E2 for v in keep.values()):
        fail("reap_metadata.json: a layer does not keep %d experts" % E2)

    # names and shapes, index
    with open(os.path.join(a.out, "model.safetensors.index.json"), encoding="utf-8") as fh:
        index = json.load(fh)
    wm = index["weight_map"]
    shapes, total = {}, 0
    for fname in sorted(set(wm.values())):
        path = os.path.join(a.out, fname)
        names, md = shard_names_shapes(path, use_lib)
        n, h = header(path)
        if (8 + n) % 8:
            fail("%s: data not 8-byte aligned" % fname)
        if not md or md.get("format") != "pt":
            fail("%s: __metadata__ format is not pt" % fname)
        for k, shp in names.items():
            if wm.get(k) != fname:
                fail("%s: tensor %s not mapped to this shard" % (fname, k))
            shapes[k] = shp
            e = h[k]
            total += e["data_offsets"][1] - e["data_offsets"][0]
    if set(shapes) != set(wm):
        fail("weight_map and shards differ: %d vs %d tensors" % (len(wm), len(shapes)))
    if index["metadata"]["total_size"] != total:
        fail("total_size %s != %d" % (index["metadata"]["total_size"], total))

    prefix = "model.language_model." if cfg_p.get("model_type") == "qwen3_vl_moe" else "model."
    pat = re.compile(re.escape(prefix) + r"layers\.(\d+)\.mlp\.(experts|gate)\.(.*)")
    per_layer = {}
    for k, shp in shapes.items():
        m = pat.match(k)
        if not m:
            continue
        L = int(m.group(1))
        per_layer.setdefault(L, set())
        if m.group(2) == "gate":
            if shp[0] != E2:
                fail("%s: dim 0 %d != %d" % (k, shp[0], E2))
            if k.endswith("gate.weight") and shp != [E2, H]:
                fail("%s: router shape %s" % (k, shp))
        else:
            sub = m.group(3).split(".")
            if sub[0].isdigit():
                per_layer[L].add(int(sub[0]))
            elif shp[0] != E2:
                fail("%s: fused dim 0 %d != %d" % (k, shp[0], E2))
    for L, ids in per_layer.items():
        if ids and ids != set(range(E2)):
            fail("layer %d: expert ids %s are not 0..%d" % (L, sorted(ids), E2 - 1))
    if set(per_layer) != set(keep):
        fail("MoE layers with experts %s != keep sets %s" % (sorted(per_layer), sorted(keep)))

    # values, float64, through the oracle's reader
    co = reap_oracle.Checkpoint(a.orig)
    cp = reap_oracle.Checkpoint(a.out)
    n_checked = 0
    for k in sorted(shapes):
        m = pat.match(k)
        got = cp.get(k)
        if m and int(m.group(1)) in keep:
            L, kept = int(m.group(1)), keep[int(m.group(1))]
            sub = m.group(3).split(".")
            if m.group(2) == "experts" and sub[0].isdigit():
                src = "%slayers.%d.mlp.experts.%d.%s" % (prefix, L, kept[int(sub[0])],
                                                         ".".join(sub[1:]))
                want = co.get(src)
            else:
                want = co.get(k)[kept]
        else:
            want = co.get(k)
        if want.shape != got.shape or not (want == got).all():
            fail("%s: values differ from the original's kept rows" % k)
        n_checked += 1
    print("checked %d tensors (%d MoE layers, %d -> %d experts)" % (n_checked, len(keep), E, E2))
    if failures:
        print("%d failures" % len(failures))
        return 1
    print("prune_check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

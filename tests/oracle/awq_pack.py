#!/usr/bin/python3
"""awq_pack.py - an independent numpy packer / unpacker of AWQ int4 (GEMM) checkpoints.

Written from the published format (AutoAWQ WQLinear_GEMM and its packing utilities, vLLM's
AWQ loader; summarised in docs/awq.md), not from the C code, so that tests can check the
C reader's unpacking and dequantisation bit for bit:

  A quantised linear with in_features K, out_features N and group g is stored as
    <module>.qweight  I32 [K, N/8]   eight 4-bit codes per int32, least significant first;
                                     nibble i of word [k, c] is column 8c + ORDER[i],
                                     ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
    <module>.qzeros   I32 [K/g, N/8] the zero points, packed the same way
    <module>.scales   F16 [K/g, N]
  and W[n, k] = (q[k, n] - z[k // g, n]) * s[k // g, n]  (codes unsigned 0..15).

Commands (exit status 0 when every check holds, 1 otherwise):
  selftest                           the packer and unpacker against hand-written words and
                                     each other
  check   --model DIR --dump FILE    every AWQ linear of DIR dequantised here equals the
                                     fp32 tensor "<module>.weight" that `test_awq dump`
                                     wrote (bit for bit), and repacking the unpacked codes
                                     reproduces the stored qweight / qzeros bytes
  twin    --model AWQ --twin TWIN    every AWQ linear of AWQ dequantised equals TWIN's plain
                                     "<module>.weight" (converted to fp32, bit for bit);
                                     every other tensor is byte-identical
  scramble --model SRC --out DST [--seed S]
                                     copy SRC with every AWQ linear replaced by random codes,
                                     zeros and f16 scales (full mantissas, both signs, every
                                     nibble value), packed by this file's packer
  pruned  --orig DIR --out DIR       an AWQ checkpoint pruned by reap-pruner: per-expert
                                     qweight/qzeros/scales groups complete, kept ones
                                     byte-identical to their sources (reap_metadata.json
                                     experts_to_keep), config.json changed only in the
                                     expert count and modules_to_not_convert, and a module
                                     is unquantised after the prune iff it was before
                                     (substring matching, as the loaders do)
"""

import argparse
import json
import mmap
import os
import re
import shutil
import struct
import sys

import numpy as np

ORDER = [0, 2, 4, 6, 1, 3, 5, 7]

NP_DTYPES = {"F32": "<f4", "F16": "<f2", "I32": "<i4", "BF16": "<u2", "F64": "<f8",
             "I64": "<i8", "U8": "u1", "I8": "i1"}
ITEM = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "U16": 2,
        "I8": 1, "U8": 1, "BOOL": 1, "U32": 4, "U64": 8}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL " + msg)


# ---- safetensors ---------------------------------------------------------------------

def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n).decode("utf-8"))
    return n, header


def read_file(path):
    """{name: (dtype, shape, raw bytes)} of one .safetensors file; checks the layout."""
    n, header = read_header(path)
    size = os.path.getsize(path)
    meta = header.pop("__metadata__", {})
    with open(path, "rb") as f:  # mapped: checkpoints of gigabytes are compared in place
        data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))[8 + n:]
    spans = []
    out = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        count = int(np.prod(h["shape"])) if h["shape"] else 1
        if e - b != count * ITEM[h["dtype"]]:
            fail("%s: %s: %d bytes for %s %s" % (path, name, e - b, h["dtype"], h["shape"]))
        spans.append((b, e))
        out[name] = (h["dtype"], list(h["shape"]), data[b:e])
    spans.sort()
    pos = 0
    for b, e in spans:
        if b != pos:
            fail("%s: hole or overlap at byte %d of the data" % (path, pos))
        pos = e
    if pos != size - 8 - n:
        fail("%s: data buffer %d bytes, tensors cover %d" % (path, size - 8 - n, pos))
    if (8 + n) % 8:
        fail("%s: data starts at byte %d, not a multiple of 8" % (path, 8 + n))
    if meta.get("format") != "pt":
        fail("%s: __metadata__.format is %r" % (path, meta.get("format")))
    return out


def shard_files(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    return ["model.safetensors"]


def read_model(d):
    """{name: (dtype, shape, bytes, file)} over all shards."""
    out = {}
    for fn in shard_files(d):
        for name, (dt, shape, raw) in read_file(os.path.join(d, fn)).items():
            if name in out:
                fail("%s: tensor %s in two shards" % (d, name))
            out[name] = (dt, shape, raw, fn)
    return out


def write_file(path, tensors):
    """tensors: {name: (dtype, shape, bytes)}; layout by descending item size, then name."""
    names = sorted(tensors, key=lambda k: (-ITEM[tensors[k][0]], k))
    header, off = {}, 0
    for k in names:
        dt, shape, raw = tensors[k]
        header[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for k in names:
            f.write(bytes(tensors[k][2]))


def as_array(dt, shape, raw):
    a = np.frombuffer(raw, dtype=NP_DTYPES[dt]).reshape(shape)
    if dt == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a


def to_f32(dt, shape, raw):
    return as_array(dt, shape, raw).astype(np.float32)


# ---- packing ---------------------------------------------------------------------------

def pack(codes):
    """codes: integer array [R, N], values 0..15 -> int32 [R, N/8]."""
    codes = np.asarray(codes, dtype=np.uint32)
    r, n = codes.shape
    assert n % 8 == 0 and codes.max(initial=0) < 16
    words = np.zeros((r, n // 8), dtype=np.uint32)
    for i in range(8):
        words |= codes[:, ORDER[i]::8] << np.uint32(4 * i)
    return words.view(np.int32)


def unpack(words):
    """int32 [R, N/8] -> uint8 codes [R, N]."""
    u = np.asarray(words).view(np.uint32)
    r, nw = u.shape
    codes = np.zeros((r, nw * 8), dtype=np.uint8)
    for i in range(8):
        codes[:, ORDER[i]::8] = (u >> np.uint32(4 * i)) & np.uint32(15)
    return codes


def dequantise(qweight, qzeros, scales, g):
    """-> W [N, K] float32 = (q - z) * s."""
    q = unpack(qweight).astype(np.int32)                     # [K, N]
    z = np.repeat(unpack(qzeros).astype(np.int32), g, axis=0)  # [K, N]
    s = np.repeat(np.asarray(scales, dtype=np.float16).astype(np.float32), g, axis=0)
    return ((q - z).astype(np.float32) * s).T.copy()


def selftest():
    # column j holds j -> nibbles (LSB first) 0 2 4 6 1 3 5 7
    w = pack(np.arange(8).reshape(1, 8))
    if w.view(np.uint32)[0, 0] != 0x75316420:
        fail("pack(0..7) = %#x, want 0x75316420" % w.view(np.uint32)[0, 0])
    # column j holds 8 + [0 4 1 5 2 6 3 7][j] -> nibbles 8 9 10 11 12 13 14 15 (negative word)
    w = pack((8 + np.array([0, 4, 1, 5, 2, 6, 3, 7])).reshape(1, 8))
    if w.view(np.uint32)[0, 0] != 0xFEDCBA98 or w[0, 0] >= 0:
        fail("pack(8 + reverse order) = %#x, want 0xfedcba98" % w.view(np.uint32)[0, 0])
    if list(unpack(np.array([[0x75316420]], dtype=np.uint32).view(np.int32))[0]) != list(range(8)):
        fail("unpack(0x75316420) is not 0..7")
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 16, size=(37, 64))
    if not np.array_equal(unpack(pack(codes)), codes):
        fail("unpack(pack(x)) != x")
    words = rng.integers(-2**31, 2**31, size=(5, 8), dtype=np.int64).astype(np.int32)
    if not np.array_equal(pack(unpack(words)), words):
        fail("pack(unpack(w)) != w")
    # dequantisation of one group against a scalar loop
    qw, qz = pack(codes[:16, :16]), pack(codes[16:18, :16])
    sc = (rng.standard_normal((2, 16)) * 0.01).astype(np.float16)
    w = dequantise(qw, qz, sc, 8)
    for n in range(16):
        for k in range(16):
            want = np.float32(int(codes[k, n]) - int(codes[16 + k // 8, n])) * np.float32(sc[k // 8, n])
            if w[n, k] != want:
                fail("dequantise [%d, %d] = %r, want %r" % (n, k, w[n, k], want))
    print("selftest: packing order, round trips and dequantisation")


# ---- checkpoints ------------------------------------------------------------------------

def group_size(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    q = cfg.get("quantization_config") or (cfg.get("text_config") or {}).get("quantization_config")
    if not q:
        return cfg, None, None
    return cfg, q, q.get("group_size", q.get("q_group_size"))


def awq_linears(tensors, g, where):
    """{module: (qweight, qzeros, scales) arrays} with shape checks."""
    out = {}
    for name in sorted(tensors):
        if not name.endswith(".qweight"):
            continue
        mod = name[:-len(".qweight")]
        parts = [tensors.get(mod + s) for s in (".qweight", ".qzeros", ".scales")]
        if any(p is None for p in parts):
            fail("%s: %s lacks qzeros or scales" % (where, mod))
            continue
        (dq, sq, rq, _), (dz, sz, rz, _), (ds, ss, rs, _) = parts
        if (dq, dz, ds) != ("I32", "I32", "F16"):
            fail("%s: %s dtypes %s/%s/%s" % (where, mod, dq, dz, ds))
            continue
        k, nw = sq
        if sz != [k // g, nw] or ss != [k // g, nw * 8] or k % g:
            fail("%s: %s shapes %s %s %s for group %d" % (where, mod, sq, sz, ss, g))
            continue
        out[mod] = (as_array(dq, sq, rq), as_array(dz, sz, rz), as_array(ds, ss, rs))
    return out


def cmd_check(model, dump):
    _, _, g = group_size(model)
    tensors = read_model(model)
    lin = awq_linears(tensors, g, model)
    dumped = read_file(dump)
    if set(m + ".weight" for m in lin) != set(dumped):
        fail("the dump holds %d tensors, the model %d AWQ linears" % (len(dumped), len(lin)))
    n_words = 0
    for mod, (qw, qz, sc) in lin.items():
        if not np.array_equal(pack(unpack(qw)), qw) or not np.array_equal(pack(unpack(qz)), qz):
            fail("%s: repacking does not reproduce the stored words" % mod)
        n_words += qw.size
        d = dumped.get(mod + ".weight")
        if d is None:
            continue
        want = dequantise(qw, qz, sc, g)
        got = to_f32(*d)
        if list(got.shape) != list(want.shape):
            fail("%s: dump shape %s, want %s" % (mod, list(got.shape), list(want.shape)))
        elif not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
            bad = int(np.sum(got.view(np.uint32) != want.view(np.uint32)))
            fail("%s: %d of %d dequantised values differ from the C reader's" % (mod, bad, want.size))
    print("check: %d AWQ linears (%d packed words, group %d) of %s" % (len(lin), n_words, g, model))


def cmd_twin(model, twin):
    _, _, g = group_size(model)
    ta, tt = read_model(model), read_model(twin)
    lin = awq_linears(ta, g, model)
    for mod, (qw, qz, sc) in lin.items():
        t = tt.get(mod + ".weight")
        if t is None:
            fail("%s.weight missing from the twin" % mod)
            continue
        if not np.array_equal(to_f32(t[0], t[1], t[2]).view(np.uint32),
                              dequantise(qw, qz, sc, g).view(np.uint32)):
            fail("%s: twin differs from the dequantised AWQ linear" % mod)
    plain = [k for k in ta if not re.search(r"\.(qweight|qzeros|scales)$", k)]
    for k in plain:
        if k not in tt or tt[k][:3] != ta[k][:3]:
            fail("%s differs between the AWQ checkpoint and its twin" % k)
    expected = set(plain) | set(m + ".weight" for m in lin)
    if set(tt) != expected:
        fail("the twin holds other tensors: %s" % sorted(set(tt) ^ expected)[:5])
    print("twin: %d AWQ linears and %d plain tensors of %s match %s" % (len(lin), len(plain), model, twin))


def cmd_scramble(model, out, seed):
    _, _, g = group_size(model)
    rng = np.random.default_rng(seed)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    for fn in os.listdir(model):
        if not fn.endswith(".safetensors"):
            shutil.copy(os.path.join(model, fn), os.path.join(out, fn))
    n = 0
    for fn in shard_files(model):
        tensors = read_file(os.path.join(model, fn))
        for name, (dt, shape, raw) in list(tensors.items()):
            if name.endswith(".qweight") or name.endswith(".qzeros"):
                codes = rng.integers(0, 16, size=(shape[0], shape[1] * 8))
                tensors[name] = (dt, shape, pack(codes).tobytes())
                n += name.endswith(".qweight")
            elif name.endswith(".scales"):
                # random finite f16: sign, exponent 5..17 (2^-10 .. 2^2), full mantissa
                bits = (rng.integers(0, 2, size=shape) << 15) | (rng.integers(5, 18, size=shape) << 10) \
                    | rng.integers(0, 1024, size=shape)
                tensors[name] = (dt, shape, bits.astype("<u2").tobytes())
        write_file(os.path.join(out, fn), tensors)
    print("scramble: %d AWQ linears of %s re-randomised into %s" % (n, model, out))


def modules_of(cfg, prefix, layers, n_experts):
    return {(L, e, p): "%slayers.%d.mlp.experts.%d.%s" % (prefix, L, e, p)
            for L in layers for e in range(n_experts) for p in ("gate_proj", "up_proj", "down_proj")}


def skipped(entries, module):
    return any(x in module for x in entries)


def cmd_pruned(orig, out):
    cfg_a, qa, g = group_size(orig)
    cfg_b, qb, gb = group_size(out)
    with open(os.path.join(out, "reap_metadata.json")) as f:
        keep = {int(k): v for k, v in json.load(f)["experts_to_keep"].items()}
    vl = "text_config" in cfg_a
    lm_a = cfg_a["text_config"] if vl else cfg_a
    lm_b = cfg_b["text_config"] if vl else cfg_b
    prefix = "model.language_model." if vl else "model."
    E = lm_a["num_experts"]
    E2 = len(next(iter(keep.values())))
    if lm_b.get("num_experts") != E2:
        fail("config: num_experts %r, want %d" % (lm_b.get("num_experts"), E2))
    # config: only the expert count and modules_to_not_convert may change
    a, b = json.loads(json.dumps(cfg_a)), json.loads(json.dumps(cfg_b))
    for c in (a, b):
        lm = c["text_config"] if vl else c
        lm.pop("num_experts", None)
        for q in (c.get("quantization_config"), lm.get("quantization_config")):
            if q:
                q.pop("modules_to_not_convert", None)
    if a != b:
        fail("config.json: a key other than num_experts / modules_to_not_convert changed")
    if qa is None or qb is None or g != gb:
        fail("quantization_config missing or its group size changed")
    # unquantised modules: the same kept modules before (old index) and after (new index)
    ma = (qa or {}).get("modules_to_not_convert") or []
    mb = (qb or {}).get("modules_to_not_convert") or []
    old = modules_of(cfg_a, prefix, keep, E)
    new = modules_of(cfg_b, prefix, keep, E2)
    n_skip = 0
    for L, ids in keep.items():
        for ni, e in enumerate(ids):
            for p in ("gate_proj", "up_proj", "down_proj"):
                s_old, s_new = skipped(ma, old[(L, e, p)]), skipped(mb, new[(L, ni, p)])
                n_skip += s_new
                if s_old != s_new:
                    fail("layer %d expert %d -> %d %s: unquantised %s before, %s after"
                         % (L, e, ni, p, s_old, s_new))
    # tensors: groups complete and kept ones byte-identical
    ta, tb = read_model(orig), read_model(out)
    pat = re.compile(re.escape(prefix) + r"layers\.(\d+)\.mlp\.experts\.(\d+)\.(.*)$")
    n_groups = 0
    for name, (dt, shape, raw, _) in tb.items():
        m = pat.match(name)
        if m and int(m.group(1)) in keep:
            L, ni, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            if ni >= E2:
                fail("%s: expert index >= %d" % (name, E2))
                continue
            src = ta.get("%slayers.%d.mlp.experts.%d.%s" % (prefix, L, keep[L][ni], rest))
            n_groups += rest.endswith(".qweight")
            if src is None or src[:3] != (dt, shape, raw):
                fail("%s is not its source expert %d" % (name, keep[L][ni]))
            if rest.endswith(".qweight"):
                mod = name[:-len(".qweight")]
                if mod + ".qzeros" not in tb or mod + ".scales" not in tb:
                    fail("%s: incomplete AWQ group" % mod)
                if skipped(mb, mod):
                    fail("%s is stored quantised but modules_to_not_convert names it" % mod)
    for name in ta:
        m = pat.match(name)
        if not m and name not in tb and ".mlp.gate." not in name:
            fail("%s disappeared" % name)
    print("pruned: %d -> %d experts, %d kept AWQ groups identical, %d unquantised expert "
          "linears listed, modules_to_not_convert %d -> %d entries"
          % (E, E2, n_groups, n_skip, len(ma), len(mb)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=["selftest", "check", "twin", "scramble", "pruned"])
    ap.add_argument("--model")
    ap.add_argument("--dump")
    ap.add_argument("--twin")
    ap.add_argument("--out")
    ap.add_argument("--orig")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.command == "selftest":
        selftest()
    elif a.command == "check":
        cmd_check(a.model, a.dump)
    elif a.command == "twin":
        cmd_twin(a.model, a.twin)
    elif a.command == "scramble":
        cmd_scramble(a.model, a.out, a.seed)
    else:
        cmd_pruned(a.orig, a.out)
    if failures:
        print("awq_pack: %d failures" % len(failures))
        return 1
    print("awq_pack %s: OK" % a.command)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""reap_oracle.py - an independent float64 reference for the REAP statistics.

Written from the published model definition (transformers' Qwen3-MoE and Qwen3-VL-MoE
text decoders), not from the C engine, so that tests can check the engine against it on
tiny generated checkpoints. Standard library + numpy only; everything is float64.

It reads config.json and the safetensors shards itself, reads and packs the calibration
JSONL exactly as model/calib.h documents, gives every slot the rotary position the
family's transformers model gives it (positions(): the slot index for qwen3_moe, the
number of valid slots before it for qwen3_vl_moe), runs the decoder layer by layer over
all rows and accumulates, per MoE layer and expert, over VALID tokens only (mask 1):
count, sum_gate_norm (sum g*||f||2), sum_norm, sum_gate, max_act (signed max of f; null
if never routed), reap = sum_gate_norm / count (0 if count == 0), plus min_topk_gap: the
smallest gap between the K-th and (K+1)-th router logit over valid tokens, relative to
that token's largest |logit| (null when K == E). A count mismatch against the engine
together with a tiny min_topk_gap is a near-tie in the random data, not an engine bug.

Images (Qwen3-VL; --images SPEC): SPEC is a JSON file
    {"merge": 2, "images": [{"grid": [t, h, w]}, ...],
     "spans": [{"row": r, "start": s, "image": i}, ...],
     "merged": FILE, "deepstack": [FILE, ...]}
naming, relative to SPEC's folder, the vision tower's outputs as .npy or raw
little-endian float32 files of [n_image_tokens, H] (images in index order, image i
taking t*(h/merge)*(w/merge) rows). The image's slots start at `start` of row `row`.
The merged features replace the embeddings there; deepstack set k is added to the
hidden states there after decoder layer k. Positions are mRoPE ids (t, h, w) as
get_rope_index forms them over the valid slots (positions3()), and RoPE is interleaved
mRoPE over the text config's mrope_section (rope()).

    reap_oracle.py --model DIR --calib FILE --seq-len N [--no-pack] [--max-samples N]
                   [--images SPEC] --out FILE
    reap_oracle.py --model DIR --rows ROWS --seq-len N [--images SPEC] --out FILE

--rows ROWS takes the packed rows as they are instead of reading and packing a calibration
file: a JSON file {"seq_len": S, "tokens": [[id, ...], ...], "mask": [[0|1, ...], ...]}
(what `reap-scorer run --dump-vision` writes as rows.json; used where the calibration file
has text or image items, which this oracle does not tokenise).
"""

import argparse
import json
import os
import struct
import sys

import numpy as np


# ---- configuration ----------------------------------------------------------------------

class Config:
    """Language-model configuration, with the transformers class defaults."""

    def __init__(self, path):
        with open(path, "r", encoding="utf-8") as fh:
            top = json.load(fh)
        mt = top.get("model_type")
        if mt == "qwen3_moe":
            c = top
            self.prefix = "model."
            self.norm_topk_prob = bool(c.get("norm_topk_prob", False))
            default_theta = 10000.0
        elif mt == "qwen3_vl_moe":
            c = top["text_config"]
            self.prefix = "model.language_model."
            self.norm_topk_prob = True   # the Qwen3-VL-MoE router always renormalises
            default_theta = 5000000.0
        else:
            raise SystemExit("reap_oracle: unsupported model_type %r" % (mt,))
        self.model_type = mt
        self.n_layers = int(c["num_hidden_layers"])
        self.hidden = int(c["hidden_size"])
        self.n_heads = int(c["num_attention_heads"])
        self.n_kv_heads = int(c.get("num_key_value_heads", self.n_heads))
        hd = c.get("head_dim")
        self.head_dim = int(hd) if hd is not None else self.hidden // self.n_heads
        self.vocab = int(c["vocab_size"])
        ne = c.get("num_experts")
        if ne is None:
            ne = c.get("num_local_experts", 0)
        self.n_experts = int(ne)
        self.top_k = int(c.get("num_experts_per_tok", 0))
        self.moe_inter = int(c.get("moe_intermediate_size", 0))
        self.inter = int(c.get("intermediate_size", 0) or 0)
        self.decoder_sparse_step = int(c.get("decoder_sparse_step", 1) or 1)
        self.mlp_only_layers = [int(x) for x in (c.get("mlp_only_layers") or [])]
        self.rms_eps = float(c.get("rms_norm_eps", 1e-6))
        theta = c.get("rope_theta")
        if theta is None:
            rp = c.get("rope_parameters") or {}
            theta = rp.get("rope_theta")
        if theta is None:
            rs = c.get("rope_scaling") or {}
            theta = rs.get("rope_theta")
        self.rope_theta = float(theta) if theta is not None else default_theta
        # interleaved mRoPE sections (t, h, w) of the Qwen3-VL text model; the model's
        # default when the config has none
        self.mrope_section = None
        if self.model_type == "qwen3_vl_moe":
            sec = None
            for nest in ("rope_parameters", "rope_scaling"):
                sec = (c.get(nest) or {}).get("mrope_section")
                if sec is not None:
                    break
            self.mrope_section = [int(v) for v in (sec if sec is not None else [24, 20, 20])]
        if c.get("attention_bias", False):
            raise SystemExit("reap_oracle: attention_bias true is not supported")
        if self.n_heads % self.n_kv_heads != 0:
            raise SystemExit("reap_oracle: heads not divisible by kv heads")

    def layer_is_moe(self, layer):
        return (layer not in self.mlp_only_layers and self.n_experts > 0
                and (layer + 1) % self.decoder_sparse_step == 0)


# ---- safetensors ------------------------------------------------------------------------

_NP_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I32": "<i4", "I64": "<i8",
              "U8": "u1", "I8": "i1", "I16": "<i2", "U16": "<u2", "BOOL": "u1"}


class Checkpoint:
    """All tensors of a checkpoint directory, read lazily as float64 arrays."""

    def __init__(self, model_dir):
        self.where = {}   # name -> (path, header entry, data start)
        index = os.path.join(model_dir, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index, "r", encoding="utf-8") as fh:
                files = sorted(set(json.load(fh)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        for fname in files:
            path = os.path.join(model_dir, fname)
            with open(path, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n).decode("utf-8"))
            for name, ent in header.items():
                if name == "__metadata__":
                    continue
                if name in self.where:
                    raise SystemExit("reap_oracle: tensor %s in two shards" % name)
                self.where[name] = (path, ent, 8 + n)

    def has(self, name):
        return name in self.where

    def get(self, name, want=None):
        """The tensor as float64; the shape `want` (optional) is checked."""
        if name not in self.where:
            raise SystemExit("reap_oracle: tensor %s not found" % name)
        path, ent, base = self.where[name]
        begin, end = ent["data_offsets"]
        shape = tuple(int(d) for d in ent["shape"])
        with open(path, "rb") as fh:
            fh.seek(base + begin)
            raw = fh.read(end - begin)
        dt = ent["dtype"]
        if dt == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32).astype(np.float64)
        elif dt in _NP_DTYPES:
            arr = np.frombuffer(raw, dtype=_NP_DTYPES[dt]).astype(np.float64)
        else:
            raise SystemExit("reap_oracle: dtype %s of %s not supported" % (dt, name))
        if not np.all(np.isfinite(arr)):
            raise SystemExit("reap_oracle: non-finite value in %s" % name)
        arr = arr.reshape(shape)
        if want is not None and arr.shape != tuple(want):
            raise SystemExit("reap_oracle: %s has shape %s, expected %s"
                             % (name, list(arr.shape), list(want)))
        return arr


# ---- calibration ------------------------------------------------------------------------

def read_samples(path, max_samples, vocab):
    samples = []
    with open(path, "r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if max_samples > 0 and len(samples) >= max_samples:
                break
            ids = json.loads(line)["input_ids"]
            if not ids:
                raise SystemExit("reap_oracle: %s:%d: empty sample" % (path, lineno))
            for t in ids:
                if not isinstance(t, int) or t < 0 or t >= vocab:
                    raise SystemExit("reap_oracle: %s:%d: bad id %r" % (path, lineno, t))
            samples.append(list(ids))
    if not samples:
        raise SystemExit("reap_oracle: %s: no samples" % path)
    return samples


def build_rows(samples, seq_len, pack):
    """Rows of seq_len (tokens, mask) as model/calib.h documents.

    pack: samples in order; one gap position (token 0, mask 0) after each sample; a
    sample that does not fit in the rest of the row is truncated to fill it (remainder
    dropped) and the next sample starts a new row; the last row is padded (0, mask 0).
    no pack: one row per sample, truncated to seq_len, padded."""
    rows = []
    if not pack:
        for s in samples:
            s = s[:seq_len]
            rows.append((s + [0] * (seq_len - len(s)), [1] * len(s) + [0] * (seq_len - len(s))))
    else:
        toks, mask = [], []
        for s in samples:
            if len(toks) == seq_len:
                rows.append((toks, mask))
                toks, mask = [], []
            room = seq_len - len(toks)
            if len(s) >= room:
                toks += s[:room]
                mask += [1] * room
                rows.append((toks, mask))
                toks, mask = [], []
                continue
            toks += s
            mask += [1] * len(s)
            toks.append(0)          # the gap: room > len(s), so it fits
            mask.append(0)
        if toks:
            pad = seq_len - len(toks)
            rows.append((toks + [0] * pad, mask + [0] * pad))
    tokens = np.array([r[0] for r in rows], dtype=np.int64)
    masks = np.array([r[1] for r in rows], dtype=bool)
    return tokens, masks


def read_rows(path, seq_len, vocab):
    """--rows: (tokens [B, S] int64, mask [B, S] bool) as given, checked."""
    with open(path, "r", encoding="utf-8") as fh:
        doc = json.load(fh)
    tokens = np.array(doc["tokens"], dtype=np.int64)
    mask = np.array(doc["mask"], dtype=np.int64)
    if int(doc["seq_len"]) != seq_len or tokens.ndim != 2 or tokens.shape != mask.shape or \
            tokens.shape[1] != seq_len or tokens.shape[0] < 1:
        raise SystemExit("reap_oracle: %s: rows are not [n, %d] tokens and mask" % (path, seq_len))
    if tokens.min() < 0 or tokens.max() >= vocab or not np.isin(mask, (0, 1)).all():
        raise SystemExit("reap_oracle: %s: a token id out of range or a mask not 0/1" % path)
    return tokens, mask.astype(bool)


# ---- the decoder, float64 -----------------------------------------------------------------

def rmsnorm(x, w, eps):
    """y = w * x / sqrt(mean(x^2) + eps) over the last axis."""
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def silu(x):
    return x / (1.0 + np.exp(-x))


def positions(cfg, mask):
    """Rotary position ids [B, S] of every slot, as the family's transformers model forms
    them when it is given only an attention mask.

    qwen3_moe: the text model's default position ids are 0..S-1 along each row; the mask
    does not enter.
    qwen3_vl_moe: the model builds its (mRoPE) position ids from the attention mask: a
    running count of the mask-1 slots of the row, minus one, so a valid slot's position
    is the number of valid slots before it; masked slots are set to 1. Without images
    the three mRoPE axes are all this one id, which makes mRoPE plain 1-D RoPE."""
    b, s = mask.shape
    if cfg.model_type == "qwen3_vl_moe":
        m = mask.astype(np.int64)
        return np.where(mask, np.cumsum(m, axis=1) - 1, 1)
    return np.broadcast_to(np.arange(s, dtype=np.int64)[None, :], (b, s))


def positions3(cfg, mask, images):
    """mRoPE ids [3, B, S] (t, h, w) of every slot with image spans, as Qwen3-VL's
    get_rope_index forms them: over the valid slots of a row only (masked slots: 1),
    text runs count on from the running position; an image of merged grid
    gt x hm x wm laid out frame by frame, row by row, gets (cur + frame, cur + row,
    cur + col), and the running position then moves one past the largest id the image
    used. images: None, or (merge, grids [(t, h, w)], spans [(row, start, image)])."""
    b, s = mask.shape
    out = np.ones((3, b, s), dtype=np.int64)
    if images is None:
        out[:] = positions(cfg, mask)[None]
        return out
    merge, grids, spans = images
    for r in range(b):
        kind = np.full(s, -1, dtype=np.int64)        # image index of each slot, -1 text
        for (row, start, im) in spans:
            if row == r:
                t, h, w = grids[im]
                n = t * (h // merge) * (w // merge)
                kind[start:start + n] = im
        valid = np.nonzero(mask[r])[0]
        ids = []
        cur = 0
        i = 0
        while i < len(valid):
            im = kind[valid[i]]
            if im < 0:
                ids.append((cur, cur, cur))
                cur += 1
                i += 1
                continue
            t, h, w = grids[im]
            hm, wm = h // merge, w // merge
            block = [(cur + f, cur + y, cur + x)
                     for f in range(t) for y in range(hm) for x in range(wm)]
            ids.extend(block)
            cur = max(max(v) for v in block) + 1
            i += len(block)
        for j, slot in enumerate(valid):
            out[:, r, slot] = ids[j]
    return out


def rope(x, theta, pos, section=None):
    """NeoX rotate-half RoPE. x: [B, S, heads, hd]; pos: [B, S] position of each slot, or
    [3, B, S] mRoPE ids with `section` (t, h, w): frequency i takes the t angle, except
    i = 1, 4, 7, ... below 3 * section[1] (the h angle) and i = 2, 5, 8, ... below
    3 * section[2] (the w angle), Qwen3-VL's interleaved layout."""
    hd = x.shape[3]
    half = hd // 2
    inv_freq = theta ** (-(np.arange(half, dtype=np.float64) * 2.0) / hd)     # [hd/2]
    if pos.ndim == 3:
        ang3 = pos.astype(np.float64)[:, :, :, None] * inv_freq[None, None, None, :]
        ang = ang3[0].copy()                                                   # t
        if section is not None:
            ang[..., 1:3 * section[1]:3] = ang3[1][..., 1:3 * section[1]:3]   # h
            ang[..., 2:3 * section[2]:3] = ang3[2][..., 2:3 * section[2]:3]   # w
    else:
        ang = pos.astype(np.float64)[:, :, None] * inv_freq[None, None, :]   # [B, S, hd/2]
    cos = np.concatenate([np.cos(ang), np.cos(ang)], axis=-1)[:, :, None, :]
    sin = np.concatenate([np.sin(ang), np.sin(ang)], axis=-1)[:, :, None, :]
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rot * sin


def attention(cfg, ck, p, x, mask, images=None):
    """x: [B, S, H] -> attention output [B, S, H]."""
    b, s, _ = x.shape
    nh, nkv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    H = cfg.hidden
    a = rmsnorm(x, ck.get(p + "input_layernorm.weight", (H,)), cfg.rms_eps)
    q = (a @ ck.get(p + "self_attn.q_proj.weight", (nh * hd, H)).T).reshape(b, s, nh, hd)
    k = (a @ ck.get(p + "self_attn.k_proj.weight", (nkv * hd, H)).T).reshape(b, s, nkv, hd)
    v = (a @ ck.get(p + "self_attn.v_proj.weight", (nkv * hd, H)).T).reshape(b, s, nkv, hd)
    q = rmsnorm(q, ck.get(p + "self_attn.q_norm.weight", (hd,)), cfg.rms_eps)
    k = rmsnorm(k, ck.get(p + "self_attn.k_norm.weight", (hd,)), cfg.rms_eps)
    section = getattr(cfg, "mrope_section", None)
    if section is not None:
        pos = positions3(cfg, mask, images)
    else:
        pos = positions(cfg, mask)
    q = rope(q, cfg.rope_theta, pos, section)
    k = rope(k, cfg.rope_theta, pos, section)
    group = nh // nkv
    k = np.repeat(k, group, axis=2)      # query head h uses KV head h // group
    v = np.repeat(v, group, axis=2)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) * (hd ** -0.5)
    causal = np.tril(np.ones((s, s), dtype=bool))
    visible = causal[None, None, :, :] & mask[:, None, None, :]           # [B,1,S,S]
    scores = np.where(visible, scores, -np.inf)
    any_vis = visible.any(axis=-1, keepdims=True)
    mx = np.where(any_vis, scores.max(axis=-1, keepdims=True), 0.0)
    e = np.where(visible, np.exp(scores - mx), 0.0)
    den = e.sum(axis=-1, keepdims=True)
    prob = np.where(any_vis, e / np.where(den > 0, den, 1.0), 0.0)   # no key: zero out
    out = np.einsum("bhqk,bkhd->bqhd", prob, v).reshape(b, s, nh * hd)
    return out @ ck.get(p + "self_attn.o_proj.weight", (H, nh * hd)).T


def dense_mlp(cfg, ck, p, x):
    H, Id = cfg.hidden, cfg.inter
    m = rmsnorm(x, ck.get(p + "post_attention_layernorm.weight", (H,)), cfg.rms_eps)
    g = m @ ck.get(p + "mlp.gate_proj.weight", (Id, H)).T
    u = m @ ck.get(p + "mlp.up_proj.weight", (Id, H)).T
    return (silu(g) * u) @ ck.get(p + "mlp.down_proj.weight", (H, Id)).T


def expert_weights(cfg, ck, p):
    """Returns a function e -> (Wg [H, I], Wu [H, I], Wd [I, H]) so that
    f_e(m) = (silu(m Wg) * (m Wu)) Wd, for both expert layouts."""
    E, I, H = cfg.n_experts, cfg.moe_inter, cfg.hidden
    if ck.has(p + "mlp.experts.gate_up_proj"):
        gu = ck.get(p + "mlp.experts.gate_up_proj", (E, H, 2 * I))
        dn = ck.get(p + "mlp.experts.down_proj", (E, I, H))
        return lambda e: (gu[e][:, :I], gu[e][:, I:], dn[e])

    def split(e):
        q = "%smlp.experts.%d." % (p, e)
        return (ck.get(q + "gate_proj.weight", (I, H)).T,
                ck.get(q + "up_proj.weight", (I, H)).T,
                ck.get(q + "down_proj.weight", (H, I)).T)
    return split


def moe_block(cfg, ck, p, layer, x, mask):
    """Returns (MoE output [B, S, H] (zero at masked positions), layer statistics)."""
    b, s, h = x.shape
    E, K = cfg.n_experts, cfg.top_k
    m = rmsnorm(x, ck.get(p + "post_attention_layernorm.weight", (h,)), cfg.rms_eps)
    mv = m.reshape(-1, h)[mask.reshape(-1)]                  # valid tokens [T, H]
    n = mv.shape[0]
    logits = mv @ ck.get(p + "mlp.gate.weight", (E, h)).T           # [T, E]
    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    order = np.argsort(-logits, axis=1, kind="stable")      # ties: lower index first
    top = order[:, :K]                                      # [T, K]
    g = np.take_along_axis(prob, top, axis=1)
    if cfg.norm_topk_prob:
        g = g / g.sum(axis=1, keepdims=True)
    gap = None
    if K < E and n > 0:
        lk = np.take_along_axis(logits, order[:, K - 1:K], axis=1)[:, 0]
        lk1 = np.take_along_axis(logits, order[:, K:K + 1], axis=1)[:, 0]
        scale = np.maximum(np.abs(logits).max(axis=1), 1e-300)
        gap = float(((lk - lk1) / scale).min())

    count = np.zeros(E, dtype=np.int64)
    sgn = np.zeros(E)
    sn = np.zeros(E)
    sg = np.zeros(E)
    mx = [None] * E
    out_v = np.zeros_like(mv)
    weights = expert_weights(cfg, ck, p)
    for e in range(E):
        tok, slot = np.nonzero(top == e)
        if tok.size == 0:
            continue
        wg, wu, wd = weights(e)
        xe = mv[tok]
        f = (silu(xe @ wg) * (xe @ wu)) @ wd                # [n_e, H]
        ge = g[tok, slot]
        norm = np.sqrt((f * f).sum(axis=1))
        count[e] = tok.size
        sgn[e] = float((ge * norm).sum())
        sn[e] = float(norm.sum())
        sg[e] = float(ge.sum())
        mx[e] = float(f.max())
        out_v[tok] += ge[:, None] * f
    out = np.zeros((b * s, h))
    out[mask.reshape(-1)] = out_v
    reap = [float(sgn[e] / count[e]) if count[e] > 0 else 0.0 for e in range(E)]
    st = {"layer": layer, "n_experts": E, "top_k": K, "tokens": int(n),
          "count": [int(c) for c in count], "sum_gate_norm": [float(v) for v in sgn],
          "sum_norm": [float(v) for v in sn], "sum_gate": [float(v) for v in sg],
          "max_act": mx, "reap": reap, "min_topk_gap": gap}
    return out.reshape(b, s, h), st


def read_features(path, hidden):
    """[n, hidden] float64 from a .npy file or raw little-endian float32."""
    if path.endswith(".npy"):
        a = np.load(path).astype(np.float64)
    else:
        a = np.fromfile(path, dtype="<f4").astype(np.float64)
    return a.reshape(-1, hidden)


def read_images(path, cfg, seq_len):
    """The --images SPEC: (merge, grids, spans), the image slots [(row, slot)] in feature
    row order, merged features and deepstack sets."""
    with open(path, encoding="utf-8") as fh:
        spec = json.load(fh)
    base = os.path.dirname(os.path.abspath(path))
    merge = int(spec["merge"])
    grids = [tuple(int(v) for v in im["grid"]) for im in spec["images"]]
    spans = [(int(sp["row"]), int(sp["start"]), int(sp["image"])) for sp in spec["spans"]]
    counts = [t * (h // merge) * (w // merge) for (t, h, w) in grids]
    where = {im: (row, start) for (row, start, im) in spans}
    if len(where) != len(grids) or len(spans) != len(grids):
        raise SystemExit("reap_oracle: every image needs exactly one span")
    slots = []
    for im, n in enumerate(counts):
        row, start = where[im]
        if start + n > seq_len:
            raise SystemExit("reap_oracle: image %d leaves its row" % im)
        slots.extend((row, start + j) for j in range(n))
    merged = read_features(os.path.join(base, spec["merged"]), cfg.hidden)
    deep = [read_features(os.path.join(base, f), cfg.hidden) for f in spec.get("deepstack", [])]
    for a in [merged] + deep:
        if a.shape[0] != len(slots):
            raise SystemExit("reap_oracle: %d feature rows for %d image tokens"
                             % (a.shape[0], len(slots)))
    return (merge, grids, spans), slots, merged, deep


def run(cfg, ck, tokens, mask, images=None):
    emb = ck.get(cfg.prefix + "embed_tokens.weight", (cfg.vocab, cfg.hidden))
    x = emb[tokens]                                          # [B, S, H]
    grid_spans = None
    deep = []
    if images is not None:
        grid_spans, slots, merged, deep = images
        rows_i = np.array([r for r, _ in slots], dtype=np.int64)
        cols_i = np.array([c for _, c in slots], dtype=np.int64)
        if not mask[rows_i, cols_i].all():
            raise SystemExit("reap_oracle: an image slot is masked")
        x[rows_i, cols_i] = merged                           # features replace embeddings
    layers = []
    for layer in range(cfg.n_layers):
        p = "%slayers.%d." % (cfg.prefix, layer)
        x = x + attention(cfg, ck, p, x, mask, grid_spans)
        if cfg.layer_is_moe(layer):
            out, st = moe_block(cfg, ck, p, layer, x, mask)
            layers.append(st)
        else:
            out = dense_mlp(cfg, ck, p, x)
        x = x + out
        if layer < len(deep):                                # deepstack after layer k
            x[rows_i, cols_i] += deep[layer]
        if not np.all(np.isfinite(x[mask])):
            raise SystemExit("reap_oracle: non-finite activation after layer %d" % layer)
    return layers


def main(argv):
    ap = argparse.ArgumentParser(description="float64 reference REAP statistics")
    ap.add_argument("--model", required=True, help="checkpoint directory")
    ap.add_argument("--calib", help="JSONL with {\"input_ids\": [...]}")
    ap.add_argument("--rows", help="packed rows as JSON (tokens, mask), instead of --calib")
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--no-pack", action="store_true", help="one row per sample")
    ap.add_argument("--max-samples", type=int, default=0, help="0: all")
    ap.add_argument("--images", help="image spans and vision features (JSON spec, above)")
    ap.add_argument("--out", required=True, help="statistics JSON to write")
    a = ap.parse_args(argv)
    if a.seq_len < 1:
        raise SystemExit("reap_oracle: --seq-len must be >= 1")
    cfg = Config(os.path.join(a.model, "config.json"))
    ck = Checkpoint(a.model)
    if (a.calib is None) == (a.rows is None):
        raise SystemExit("reap_oracle: give exactly one of --calib and --rows")
    if a.rows:
        tokens, mask = read_rows(a.rows, a.seq_len, cfg.vocab)
    else:
        samples = read_samples(a.calib, a.max_samples, cfg.vocab)
        tokens, mask = build_rows(samples, a.seq_len, not a.no_pack)
    images = read_images(a.images, cfg, a.seq_len) if a.images else None
    layers = run(cfg, ck, tokens, mask, images)
    doc = {"format": "reap-stats/1", "tokens": int(mask.sum()), "layers": layers}
    tmp = a.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, a.out)
    print("reap_oracle: %d rows x %d, %d valid tokens, %d MoE layers -> %s"
          % (tokens.shape[0], a.seq_len, doc["tokens"], len(layers), a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""vision_oracle.py - an independent float64 reference for the Qwen3-VL vision tower.

Written from the description of the model (the facts page on the Qwen3-VL vision path
and transformers' Qwen3VLMoeVisionModel as documented there), not from the C code:
patch embedding as a linear map, the learned position table bilinearly interpolated to
the patch grid, 2-D rotary attention within each frame, tanh-GELU MLP blocks, the merger
(LayerNorm before grouping) and the deepstack mergers (LayerNorm after grouping).
Everything runs in float64 numpy, except the one step whose float32 rounding decides
integer indices: torch.linspace in float32 with a truncating floor.

Usage:
  vision_oracle.py MODEL_DIR DUMP_DIR [--tol 1e-4]
DUMP_DIR holds what tests/test_vision.c --dump wrote: meta.json (grids, n_patches,
n_tokens, n_deepstack), patches.f32 [Np, D], out.f32 [Nt, Ho], deep.f32 [Nd, Nt, Ho]
(little-endian float32). Prints the relative L2 error of each output
(||c - o|| / ||o||) and exits 1 when one is above --tol.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reap_oracle import Checkpoint  # noqa: E402  (the shared safetensors reader)

LN_EPS = 1e-6
ROPE_THETA = 10000.0


def vision_config(model_dir):
    with open(os.path.join(model_dir, "config.json"), "r", encoding="utf-8") as fh:
        root = json.load(fh)
    vc = dict(root["vision_config"])
    vc["text_hidden"] = root["text_config"]["hidden_size"]
    return vc


def layer_norm(x, w, b):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + LN_EPS) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


_erf = np.vectorize(math.erf)


def gelu_erf(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def linspace_f32(end, n):
    """torch.linspace(0, end, n) in float32 (CPU kernel): the first half counts up from 0,
    the second half down from end, with the step rounded to float32."""
    if n == 1:
        return np.zeros(1, dtype=np.float32)
    end32 = np.float32(end)
    step = np.float32(end32 / np.float32(n - 1))
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        if i < n // 2:
            out[i] = np.float32(step * np.float32(i))
        else:
            # a fused multiply-add in the kernel: one rounding of end - step * k
            out[i] = np.float32(float(end32) - float(step) * (n - 1 - i))
    return out


def merge_block_coords(gh, gw, m):
    """(row, col) of each patch of one frame, in the processor's merge-block order."""
    rows, cols = [], []
    for br in range(gh // m):
        for bc in range(gw // m):
            for ir in range(m):
                for ic in range(m):
                    rows.append(br * m + ir)
                    cols.append(bc * m + ic)
    return np.array(rows), np.array(cols)


def interpolated_pos(table, side, gh, gw, rows, cols):
    """The side x side table bilinearly resampled at the grid points of (gh, gw)."""
    hy = linspace_f32(side - 1, gh)[rows]
    wx = linspace_f32(side - 1, gw)[cols]
    h0 = hy.astype(np.int64)          # truncation, as .int()
    w0 = wx.astype(np.int64)
    h1 = np.minimum(h0 + 1, side - 1)
    w1 = np.minimum(w0 + 1, side - 1)
    dh = (hy - h0.astype(np.float32)).astype(np.float64)[:, None]
    dw = (wx - w0.astype(np.float32)).astype(np.float64)[:, None]
    e = lambda h, w: table[h * side + w]
    return ((1 - dh) * (1 - dw) * e(h0, w0) + (1 - dh) * dw * e(h0, w1)
            + dh * (1 - dw) * e(h1, w0) + dh * dw * e(h1, w1))


def rotary(x, rows, cols, hd):
    """2-D rotary on x [L, nh, hd]: hd/4 frequencies for the row, hd/4 for the column,
    the hd/2 angles used twice, rotate-half pairing of i and i + hd/2."""
    half = hd // 2
    inv = 1.0 / (ROPE_THETA ** (np.arange(0, half, 2, dtype=np.float64) / half))
    ang = np.concatenate([rows[:, None] * inv[None], cols[:, None] * inv[None]], axis=1)
    ang = np.concatenate([ang, ang], axis=1)[:, None, :]      # [L, 1, hd]
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * np.cos(ang) + rot * np.sin(ang)


def merger(ck, prefix, x, m2, post, H):
    """Group m2 consecutive patches; LayerNorm before (post False) or after grouping."""
    g = lambda n: ck.get("model.visual.%s.%s" % (prefix, n))
    if post:
        y = layer_norm(x.reshape(-1, m2 * H), g("norm.weight"), g("norm.bias"))
    else:
        y = layer_norm(x, g("norm.weight"), g("norm.bias")).reshape(-1, m2 * H)
    y = gelu_erf(y @ g("linear_fc1.weight").T + g("linear_fc1.bias"))
    return y @ g("linear_fc2.weight").T + g("linear_fc2.bias")


def vision_forward(vc, ck, patches, grids):
    H = vc["hidden_size"]
    nh = vc["num_heads"]
    hd = H // nh
    m = vc["spatial_merge_size"]
    C, T, P = vc["in_channels"], vc["temporal_patch_size"], vc["patch_size"]
    side = int(round(math.sqrt(vc["num_position_embeddings"])))
    act = gelu_tanh if vc["hidden_act"] in ("gelu_pytorch_tanh", "gelu_new") else gelu_erf
    g = lambda n, shape=None: ck.get("model.visual." + n, shape)

    w = g("patch_embed.proj.weight", (H, C, T, P, P)).reshape(H, C * T * P * P)
    x = patches @ w.T + g("patch_embed.proj.bias")
    table = g("pos_embed.weight", (side * side, H))

    frames = []   # (start, length, rows, cols) of each frame
    start = 0
    for (t, gh, gw) in grids:
        rows, cols = merge_block_coords(gh, gw, m)
        pe = interpolated_pos(table, side, gh, gw, rows, cols)
        for _ in range(t):
            x[start:start + gh * gw] += pe
            frames.append((start, gh * gw, rows, cols))
            start += gh * gw
    assert start == x.shape[0]

    deep = []
    ds = list(vc["deepstack_visual_indexes"])
    for b in range(vc["depth"]):
        pre = "blocks.%d." % b
        h = layer_norm(x, g(pre + "norm1.weight"), g(pre + "norm1.bias"))
        qkv = h @ g(pre + "attn.qkv.weight").T + g(pre + "attn.qkv.bias")
        qkv = qkv.reshape(-1, 3, nh, hd)
        att = np.zeros((x.shape[0], nh, hd))
        for (s0, L, rows, cols) in frames:
            q = rotary(qkv[s0:s0 + L, 0], rows, cols, hd)
            k = rotary(qkv[s0:s0 + L, 1], rows, cols, hd)
            v = qkv[s0:s0 + L, 2]
            for i in range(nh):
                sc = q[:, i] @ k[:, i].T / math.sqrt(hd)
                sc = np.exp(sc - sc.max(axis=1, keepdims=True))
                sc /= sc.sum(axis=1, keepdims=True)
                att[s0:s0 + L, i] = sc @ v[:, i]
        x = x + att.reshape(-1, H) @ g(pre + "attn.proj.weight").T + g(pre + "attn.proj.bias")
        h = layer_norm(x, g(pre + "norm2.weight"), g(pre + "norm2.bias"))
        h = act(h @ g(pre + "mlp.linear_fc1.weight").T + g(pre + "mlp.linear_fc1.bias"))
        x = x + h @ g(pre + "mlp.linear_fc2.weight").T + g(pre + "mlp.linear_fc2.bias")
        if b in ds:
            deep.append(merger(ck, "deepstack_merger_list.%d" % ds.index(b), x, m * m, True,
                               H))
    return merger(ck, "merger", x, m * m, False, H), deep


def rel_l2(c, o):
    return float(np.linalg.norm(c - o) / max(np.linalg.norm(o), 1e-300))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("dump_dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args(argv)

    vc = vision_config(a.model_dir)
    with open(os.path.join(a.dump_dir, "meta.json"), "r", encoding="utf-8") as fh:
        meta = json.load(fh)
    grids = [tuple(gr) for gr in meta["grids"]]
    np_, nt, nd = meta["n_patches"], meta["n_tokens"], meta["n_deepstack"]
    D = vc["in_channels"] * vc["temporal_patch_size"] * vc["patch_size"] ** 2
    Ho = vc["out_hidden_size"]
    rd = lambda n, shape: np.fromfile(os.path.join(a.dump_dir, n), dtype="<f4").astype(
        np.float64).reshape(shape)
    patches = rd("patches.f32", (np_, D))
    c_out = rd("out.f32", (nt, Ho))
    c_deep = rd("deep.f32", (nd, nt, Ho)) if nd else np.zeros((0, nt, Ho))

    ck = Checkpoint(a.model_dir)
    o_out, o_deep = vision_forward(vc, ck, patches, grids)
    if len(o_deep) != nd:
        print("vision_oracle: %d deepstack sets, the C side wrote %d" % (len(o_deep), nd))
        return 1
    worst = 0.0
    errs = [("merger", rel_l2(c_out, o_out))]
    errs += [("deepstack[%d]" % k, rel_l2(c_deep[k], o_deep[k])) for k in range(nd)]
    for name, e in errs:
        print("vision_oracle: %-13s relative L2 error %.3e (tolerance %.0e)" % (name, e, a.tol))
        worst = max(worst, e)
    if not worst <= a.tol:
        print("vision_oracle: FAIL: worst %.3e above %.0e" % (worst, a.tol))
        return 1
    print("vision_oracle: PASS: %d image(s) %s, %d tokens, worst %.3e"
          % (len(grids), grids, nt, worst))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

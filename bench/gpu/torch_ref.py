#!/usr/bin/env python3
"""torch_ref.py - the reference algorithm in PyTorch on one Qwen3-VL-235B-shaped layer.

What the REAP reference implementation (CerebrasResearch/reap) does per MoE layer while
it observes a Hugging Face model in eager mode, written out on random bf16 weights:

  attention (HF "eager" Qwen3-VL-MoE text attention): RMSNorm, q/k/v projections,
    per-head q/k RMSNorm, rotate-half RoPE, repeat_kv for GQA, full score matrices
    (q k^T * scale in bf16 + causal mask), softmax in fp32, P V, o_proj, residual;
  MoE: RMSNorm, router logits, softmax in fp32, top-k with renormalisation, then EVERY
    expert on EVERY token (the observer needs each expert's output norm), routed
    statistics (count, sum g*||f||, sum ||f||, sum g, max f) and the gated combine.

Usage: torch_ref.py [--rows 32] [--seq 2048] [--layers 2] [--attn-rows 4]
                    [--hidden 4096 --heads 64 --kv-heads 4 --head-dim 128
                     --experts 128 --top-k 8 --inter 1536]
Prints ms per layer (mean over --layers layers after one warm-up layer) and a line
"RESULT torch layer_s=... tokens=..." for bench/gpu/run.sh.
"""
import argparse
import math
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--attn-rows", type=int, default=4, help="rows per score batch")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=64)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--experts", type=int, default=128)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--inter", type=int, default=1536)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("SKIPPED: no CUDA device for PyTorch")
        return 77
    dev, dt = "cuda", torch.bfloat16
    H, nH, nKV, hd = a.hidden, a.heads, a.kv_heads, a.head_dim
    E, K, I, R, S = a.experts, a.top_k, a.inter, a.rows, a.seq
    T = R * S
    eps = 1e-6
    torch.manual_seed(0)
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}: {R} rows x {S} "
          f"= {T} tokens, H {H}, heads {nH}/{nKV} of {hd}, {E} experts top-{K}, I {I}")

    def rnd(*shape, scale):
        w = torch.empty(*shape, device=dev, dtype=dt)
        w.uniform_(-scale, scale)
        return w

    s_in = math.sqrt(3.0 / H)
    Wq, Wk, Wv = rnd(nH * hd, H, scale=s_in), rnd(nKV * hd, H, scale=s_in), rnd(nKV * hd, H, scale=s_in)
    Wo = rnd(H, nH * hd, scale=math.sqrt(3.0 / (nH * hd)))
    Wr = rnd(E, H, scale=2 * s_in)
    Wgu = rnd(E, H, 2 * I, scale=s_in)      # fused checkpoint layout [E, H, 2I]
    Wd = rnd(E, I, H, scale=math.sqrt(3.0 / I))  # [E, I, H]
    in_norm = torch.ones(H, device=dev, dtype=dt)
    post_norm = torch.ones(H, device=dev, dtype=dt)
    qn = torch.ones(hd, device=dev, dtype=dt)
    kn = torch.ones(hd, device=dev, dtype=dt)
    inv_freq = 1.0 / (5e6 ** (torch.arange(0, hd, 2, device=dev, dtype=torch.float32) / hd))
    ang = torch.arange(S, device=dev, dtype=torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos().to(dt), emb.sin().to(dt)  # [S, hd]
    causal = torch.full((S, S), torch.finfo(dt).min, device=dev, dtype=dt).triu(1)
    scaling = hd ** -0.5

    def rmsnorm(x, w):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        return w * xf.to(dt)

    def rotate_half(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def repeat_kv(x, n):
        b, h, s, d = x.shape
        return x[:, :, None].expand(b, h, n, s, d).reshape(b, h * n, s, d)

    def layer(x):
        # attention
        res = x
        h = rmsnorm(x, in_norm)
        q = rmsnorm((h @ Wq.T).view(R, S, nH, hd), qn).transpose(1, 2)
        k = rmsnorm((h @ Wk.T).view(R, S, nKV, hd), kn).transpose(1, 2)
        v = (h @ Wv.T).view(R, S, nKV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        out = torch.empty(R, S, nH * hd, device=dev, dtype=dt)
        for r0 in range(0, R, a.attn_rows):
            r1 = min(R, r0 + a.attn_rows)
            kb, vb = repeat_kv(k[r0:r1], nH // nKV), repeat_kv(v[r0:r1], nH // nKV)
            w = torch.matmul(q[r0:r1], kb.transpose(2, 3)) * scaling + causal
            w = torch.softmax(w, dim=-1, dtype=torch.float32).to(dt)
            out[r0:r1] = torch.matmul(w, vb).transpose(1, 2).reshape(r1 - r0, S, nH * hd)
        x = res + out.view(T, nH * hd) @ Wo.T
        # MoE with every expert on every token, statistics of the routed pairs
        res = x
        m = rmsnorm(x, post_norm)
        probs = torch.softmax((m @ Wr.T).float(), dim=-1)
        topv, topi = probs.topk(K, dim=-1)
        topv = topv / topv.sum(-1, keepdim=True)
        gates = torch.zeros(T, E, device=dev, dtype=torch.float32).scatter_(1, topi, topv)
        moe = torch.zeros(T, H, device=dev, dtype=dt)
        stats = torch.zeros(5, E, device=dev, dtype=torch.float64)
        for e in range(E):
            g, u = (m @ Wgu[e]).chunk(2, dim=-1)
            f = (torch.nn.functional.silu(g) * u) @ Wd[e]  # [T, H]
            nrm = f.float().norm(dim=-1)
            ge = gates[:, e]
            sel = ge > 0
            stats[0, e] = sel.sum()
            stats[1, e] = (ge * nrm).sum()
            stats[2, e] = (nrm * sel).sum()
            stats[3, e] = ge.sum()
            stats[4, e] = torch.where(sel[:, None], f, torch.finfo(dt).min).amax()
            moe += ge[:, None].to(dt) * f
        return res + moe, stats

    x = torch.empty(T, H, device=dev, dtype=dt).uniform_(-1.7, 1.7)
    x, _ = layer(x)  # warm-up
    torch.cuda.synchronize()
    times = []
    for _ in range(a.layers):
        t0 = time.perf_counter()
        x, st = layer(x)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        assert torch.isfinite(st[:4]).all()
        print(f"  layer {len(times)}: {times[-1] * 1e3:.1f} ms, routed pairs {int(st[0].sum())}")
    mean = sum(times) / len(times)
    print(f"mean {mean * 1e3:.1f} ms per layer, {T / mean:.0f} tokens/s, peak memory "
          f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"RESULT torch layer_s={mean:.4f} tokens={T} note=eager-all-experts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

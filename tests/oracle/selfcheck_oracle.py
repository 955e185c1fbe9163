#!/usr/bin/python3
"""selfcheck_oracle.py - checks of the float64 oracle (reap_oracle.py) on hand-made
checkpoints written here with numpy, independent of the C code.

1. Analytic routing: attention output forced to zero (o_proj = 0), one-hot embeddings,
   identity experts and a router built so that token v routes to experts v and v+1;
   counts, gates, norms and max_act are then known in closed form. Run for qwen3_moe
   (split experts, F32, no renormalisation) and qwen3_vl_moe (fused experts, BF16,
   always renormalised).
2. Packing and no-packing rows as model/calib.h documents them.
3. Attention against a naive loop implementation; RoPE relative-position invariance;
   the rotary positions of each family on hand-written masks.
4. A random 3-layer model (one dense layer): sum of counts == K * valid tokens, sum of
   renormalised gates == valid tokens, and changing the tokens under masked positions
   (packing gaps, padding) leaves every statistic unchanged. The same weights as a
   qwen3_vl_moe model, whose positions count valid tokens only: packed rows with their
   gaps squeezed out (valid tokens moved to the front of the row) give the same
   statistics; as qwen3_moe (positions = slot index) they do not.

    selfcheck_oracle.py [SCRATCH_DIR]      exit status 0 when every check passes
"""

import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reap_oracle as ro  # noqa: E402

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what)


def write_safetensors(path, tensors, dtype):
    """tensors: name -> float array. dtype "F32" or "BF16" (truncation; tests use values
    that are exact in bf16 or do not care)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name], dtype=np.float32)
        if dtype == "BF16":
            raw = (a.view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            raw = a.astype("<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    hj = json.dumps(header).encode()
    hj += b" " * ((8 - (8 + len(hj)) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hj)))
        fh.write(hj)
        for b in blobs:
            fh.write(b)


def write_model(d, family, tc, tensors, dtype, shards=1):
    os.makedirs(d, exist_ok=True)
    if family == "qwen3_moe":
        cfg = dict(tc, model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"])
    else:
        cfg = {"model_type": "qwen3_vl_moe",
               "architectures": ["Qwen3VLMoeForConditionalGeneration"],
               "text_config": dict(tc, model_type="qwen3_vl_moe_text"),
               "vision_config": {"depth": 1}}
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), tensors, dtype)
        return
    names = sorted(tensors)
    wm = {}
    for i in range(shards):
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, shards)
        part = {n: tensors[n] for n in names[i::shards]}
        write_safetensors(os.path.join(d, fname), part, dtype)
        wm.update({n: fname for n in part})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, fh)


def write_calib(path, samples):
    with open(path, "w") as fh:
        for s in samples:
            fh.write(json.dumps({"input_ids": [int(t) for t in s]}) + "\n")
            fh.write("\n")   # blank lines are skipped


def run_oracle(model, calib, seq_len, out, extra=()):
    cmd = [sys.executable, os.path.join(HERE, "reap_oracle.py"), "--model", model,
           "--calib", calib, "--seq-len", str(seq_len), "--out", out] + list(extra)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out) as fh:
        return json.load(fh)


# ---- 1. analytic routing -------------------------------------------------------------

def analytic(scratch, family, fused, dtype):
    H = E = I = V = 8
    K = 2
    nh, nkv, hd = 2, 1, 4
    eps = 1e-6
    pre = "model." if family == "qwen3_moe" else "model.language_model."
    p = pre + "layers.0."
    t = {pre + "embed_tokens.weight": np.eye(V, H),
         pre + "norm.weight": np.ones(H), "lm_head.weight": np.zeros((V, H)),
         p + "input_layernorm.weight": np.ones(H),
         p + "post_attention_layernorm.weight": np.ones(H),
         p + "self_attn.q_proj.weight": np.ones((nh * hd, H)),
         p + "self_attn.k_proj.weight": np.ones((nkv * hd, H)),
         p + "self_attn.v_proj.weight": np.ones((nkv * hd, H)),
         p + "self_attn.o_proj.weight": np.zeros((H, nh * hd)),
         p + "self_attn.q_norm.weight": np.ones(hd),
         p + "self_attn.k_norm.weight": np.ones(hd)}
    router = np.zeros((E, H))
    for v in range(H):
        router[v, v] = 2.0
        router[(v + 1) % E, v] = 1.0
    t[p + "mlp.gate.weight"] = router
    if fused:
        t[p + "mlp.experts.gate_up_proj"] = np.stack(
            [np.concatenate([np.eye(H), np.eye(H)], axis=1)] * E)     # [E, H, 2I]
        t[p + "mlp.experts.down_proj"] = np.stack([np.eye(I)] * E)    # [E, I, H]
    else:
        for e in range(E):
            q = "%smlp.experts.%d." % (p, e)
            t[q + "gate_proj.weight"] = np.eye(I, H)
            t[q + "up_proj.weight"] = np.eye(I, H)
            t[q + "down_proj.weight"] = np.eye(H, I)
    tc = {"hidden_size": H, "num_hidden_layers": 1, "num_attention_heads": nh,
          "num_key_value_heads": nkv, "head_dim": hd, "vocab_size": V, "num_experts": E,
          "num_experts_per_tok": K, "moe_intermediate_size": I, "intermediate_size": 16,
          "rms_norm_eps": eps, "rope_theta": 10000.0}
    if family == "qwen3_moe":
        tc["norm_topk_prob"] = False
    d = os.path.join(scratch, "analytic_%s" % family)
    write_model(d, family, tc, t, dtype, shards=1 if not fused else 2)
    rng = np.random.default_rng(1)
    samples = [list(rng.integers(0, V, size=n)) for n in (5, 9, 3, 12)]
    write_calib(os.path.join(d, "calib.jsonl"), samples)
    st = run_oracle(d, os.path.join(d, "calib.jsonl"), 16, os.path.join(d, "out.json"),
                    ["--no-pack"])

    toks = [tok for s in samples for tok in s]
    n_tok = np.bincount(toks, minlength=V)
    s_ = 1.0 / np.sqrt(1.0 / H + eps)            # the one non-zero of rmsnorm(e_v)
    logits = np.array([2 * s_, s_] + [0.0] * (E - 2))
    pr = np.exp(logits - logits.max())
    pr /= pr.sum()
    g_hi, g_lo = pr[0], pr[1]
    if family == "qwen3_vl_moe":
        g_hi, g_lo = g_hi / (g_hi + g_lo), g_lo / (g_hi + g_lo)
    fnorm = s_ * s_ / (1.0 + np.exp(-s_))         # silu(s) * s
    L = st["layers"][0]
    check(st["tokens"] == len(toks), "%s: tokens %d != %d" % (family, st["tokens"], len(toks)))
    for e in range(E):
        a, b = n_tok[e], n_tok[(e - 1) % E]
        check(L["count"][e] == a + b, "%s: count[%d]" % (family, e))
        exp_sg = a * g_hi + b * g_lo
        check(abs(L["sum_gate"][e] - exp_sg) <= 1e-12 * max(1, exp_sg),
              "%s: sum_gate[%d] %r != %r" % (family, e, L["sum_gate"][e], exp_sg))
        check(abs(L["sum_norm"][e] - (a + b) * fnorm) <= 1e-12 * (a + b + 1) * fnorm,
              "%s: sum_norm[%d]" % (family, e))
        check(abs(L["sum_gate_norm"][e] - exp_sg * fnorm) <= 1e-12 * (a + b + 1) * fnorm,
              "%s: sum_gate_norm[%d]" % (family, e))
        if a + b > 0:
            check(abs(L["max_act"][e] - fnorm) <= 1e-12 * fnorm, "%s: max_act[%d]" % (family, e))
            check(abs(L["reap"][e] - exp_sg * fnorm / (a + b)) <= 1e-12 * fnorm,
                  "%s: reap[%d]" % (family, e))
        else:
            check(L["max_act"][e] is None and L["reap"][e] == 0.0, "%s: unrouted %d" % (family, e))
    check(abs(L["min_topk_gap"] - 0.5) < 1e-12, "%s: min_topk_gap %r" % (family, L["min_topk_gap"]))
    print("analytic %s (%s, %s): ok" % (family, "fused" if fused else "split", dtype))


# ---- 2. packing ------------------------------------------------------------------------

def packing():
    s = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10], [11, 12, 13, 14]]
    tok, mask = ro.build_rows(s, 5, True)
    exp_t = [[1, 2, 3, 0, 4], [10, 0, 11, 12, 13]]
    exp_m = [[1, 1, 1, 0, 1], [1, 0, 1, 1, 1]]
    check(tok.tolist() == exp_t and mask.astype(int).tolist() == exp_m,
          "pack: %s %s" % (tok.tolist(), mask.astype(int).tolist()))
    # exact fit: sample fills the rest of the row, then sample + gap fills a row
    tok, mask = ro.build_rows([[1, 2], [3, 4, 5], [6, 7], [8]], 4, True)
    check(tok.tolist() == [[1, 2, 0, 3], [6, 7, 0, 8]]
          and mask.astype(int).tolist() == [[1, 1, 0, 1], [1, 1, 0, 1]],
          "pack exact: %s" % tok.tolist())
    tok, mask = ro.build_rows([[1, 2, 3], [4]], 4, True)
    check(tok.tolist() == [[1, 2, 3, 0], [4, 0, 0, 0]]
          and mask.astype(int).tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]],
          "pack gap at end: %s" % tok.tolist())
    tok, mask = ro.build_rows(s, 5, False)
    check(tok.tolist() == [[1, 2, 3, 0, 0], [4, 5, 6, 7, 8], [10, 0, 0, 0, 0],
                           [11, 12, 13, 14, 0]]
          and mask.sum() == 3 + 5 + 1 + 4, "no pack: %s" % tok.tolist())
    print("packing: ok")


# ---- 3. attention ------------------------------------------------------------------------

class _Ck:
    def __init__(self, t):
        self.t = t

    def get(self, n, want=None):
        return self.t[n]

    def has(self, n):
        return n in self.t


class _Cfg:
    def __init__(self, model_type="qwen3_moe"):
        self.model_type = model_type


def attention_naive(cfg, w, x, mask):
    b, s, h = x.shape
    nh, nkv, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    out = np.zeros((b, s, nh * hd))
    for r in range(b):
        q = np.zeros((s, nh, hd))
        k = np.zeros((s, nkv, hd))
        v = np.zeros((s, nkv, hd))
        for i in range(s):
            # rotary position: the slot index (qwen3_moe); the number of valid slots
            # before it, 1 when masked (qwen3_vl_moe)
            if cfg.model_type == "qwen3_moe":
                pi = i
            else:
                pi = sum(1 for j in range(i) if mask[r, j]) if mask[r, i] else 1
            xi = x[r, i]
            a = w["in"] * xi / np.sqrt(np.mean(xi ** 2) + cfg.rms_eps)
            qi = (w["q"] @ a).reshape(nh, hd)
            ki = (w["k"] @ a).reshape(nkv, hd)
            v[i] = (w["v"] @ a).reshape(nkv, hd)
            for hh in range(nh):
                y = w["qn"] * qi[hh] / np.sqrt(np.mean(qi[hh] ** 2) + cfg.rms_eps)
                q[i, hh] = rot(y, pi, cfg.rope_theta)
            for hh in range(nkv):
                y = w["kn"] * ki[hh] / np.sqrt(np.mean(ki[hh] ** 2) + cfg.rms_eps)
                k[i, hh] = rot(y, pi, cfg.rope_theta)
        for i in range(s):
            for hh in range(nh):
                kv = hh // (nh // nkv)
                keys = [j for j in range(i + 1) if mask[r, j]]
                if not keys:
                    continue
                sc = np.array([q[i, hh] @ k[j, kv] / np.sqrt(hd) for j in keys])
                pr = np.exp(sc - sc.max())
                pr /= pr.sum()
                out[r, i, hh * hd:(hh + 1) * hd] = sum(pr[n] * v[j, kv] for n, j in enumerate(keys))
    return out @ w["o"].T


def rot(y, pos, theta):
    hd = y.size
    half = hd // 2
    r = np.empty(hd)
    for i in range(half):
        ang = pos * theta ** (-2.0 * i / hd)
        c, s = np.cos(ang), np.sin(ang)
        r[i] = y[i] * c - y[i + half] * s
        r[i + half] = y[i + half] * c + y[i] * s
    return r


def attention_check():
    rng = np.random.default_rng(7)
    cfg = _Cfg()
    cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.rms_eps, cfg.rope_theta = 4, 2, 6, 1e-6, 1e4
    H = cfg.hidden = 10
    w = {"in": 1 + 0.1 * rng.standard_normal(H), "q": rng.standard_normal((24, H)),
         "k": rng.standard_normal((12, H)), "v": rng.standard_normal((12, H)),
         "o": rng.standard_normal((H, 24)), "qn": 1 + 0.1 * rng.standard_normal(6),
         "kn": 1 + 0.1 * rng.standard_normal(6)}
    p = "L."
    ck = _Ck({p + "input_layernorm.weight": w["in"], p + "self_attn.q_proj.weight": w["q"],
              p + "self_attn.k_proj.weight": w["k"], p + "self_attn.v_proj.weight": w["v"],
              p + "self_attn.o_proj.weight": w["o"], p + "self_attn.q_norm.weight": w["qn"],
              p + "self_attn.k_norm.weight": w["kn"]})
    x = rng.standard_normal((3, 7, H))
    mask = np.ones((3, 7), dtype=bool)
    mask[0, 3] = False
    mask[1, 5:] = False
    mask[2, 0] = False          # a query with no visible key gets zero attention output
    err = 0.0
    for family in ("qwen3_moe", "qwen3_vl_moe"):   # their positions differ (mask 0 at 3)
        cfg.model_type = family
        fast = ro.attention(cfg, ck, p, x, mask)
        slow = attention_naive(cfg, w, x, mask)
        e = np.abs(fast - slow).max() / np.abs(slow).max()
        check(e < 1e-12, "attention vs naive (%s): rel err %g" % (family, e))
        check(np.all(fast[2, 0] == 0.0), "attention: no visible key must give zero")
        err = max(err, e)
    # RoPE: <rope(q, i), rope(k, j)> depends only on i - j
    q = rng.standard_normal((1, 1, 1, 8))
    k = rng.standard_normal((1, 1, 1, 8))
    big_q = np.repeat(q, 12, axis=1)
    big_k = np.repeat(k, 12, axis=1)
    idx = np.arange(12)[None, :]
    rq, rk = ro.rope(big_q, 1e4, idx), ro.rope(big_k, 1e4, idx)
    d1 = rq[0, 7, 0] @ rk[0, 4, 0]
    d2 = rq[0, 10, 0] @ rk[0, 7, 0]
    check(abs(d1 - d2) < 1e-12, "rope relative invariance %r %r" % (d1, d2))
    # positions per family (hand-written from the rule: VL counts valid slots, masked 1)
    m = np.array([[1, 1, 1, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1, 1],
                  [1, 1, 1, 1, 1, 1, 1, 1]], dtype=bool)
    vl = ro.positions(_Cfg("qwen3_vl_moe"), m)
    check(vl.tolist() == [[0, 1, 2, 1, 3, 4, 1, 1], [1, 0, 1, 2, 3, 4, 5, 6],
                          [0, 1, 2, 3, 4, 5, 6, 7]], "positions qwen3_vl_moe %s" % vl)
    moe = ro.positions(_Cfg("qwen3_moe"), m)
    check(moe.tolist() == [list(range(8))] * 3, "positions qwen3_moe %s" % moe)
    print("attention, rope, positions: ok (rel err %.1e)" % err)


# ---- 4. random model ---------------------------------------------------------------------

def random_model(scratch):
    rng = np.random.default_rng(3)
    H, nh, nkv, hd, E, K, I, Id, V, nl = 16, 4, 2, 4, 6, 2, 12, 20, 50, 3  # hd: default H/nh
    pre = "model."
    t = {pre + "embed_tokens.weight": rng.standard_normal((V, H)),
         pre + "norm.weight": np.ones(H), "lm_head.weight": rng.standard_normal((V, H))}
    for L in range(nl):
        p = "%slayers.%d." % (pre, L)
        t[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(H)
        t[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(H)
        t[p + "self_attn.q_proj.weight"] = rng.standard_normal((nh * hd, H)) / np.sqrt(H)
        t[p + "self_attn.k_proj.weight"] = rng.standard_normal((nkv * hd, H)) / np.sqrt(H)
        t[p + "self_attn.v_proj.weight"] = rng.standard_normal((nkv * hd, H)) / np.sqrt(H)
        t[p + "self_attn.o_proj.weight"] = rng.standard_normal((H, nh * hd)) / np.sqrt(nh * hd)
        t[p + "self_attn.q_norm.weight"] = 1 + 0.1 * rng.standard_normal(hd)
        t[p + "self_attn.k_norm.weight"] = 1 + 0.1 * rng.standard_normal(hd)
        if L == 1:   # dense via mlp_only_layers
            t[p + "mlp.gate_proj.weight"] = rng.standard_normal((Id, H)) / np.sqrt(H)
            t[p + "mlp.up_proj.weight"] = rng.standard_normal((Id, H)) / np.sqrt(H)
            t[p + "mlp.down_proj.weight"] = rng.standard_normal((H, Id)) / np.sqrt(Id)
            continue
        t[p + "mlp.gate.weight"] = 2 * rng.standard_normal((E, H)) / np.sqrt(H)
        for e in range(E):
            q = "%smlp.experts.%d." % (p, e)
            t[q + "gate_proj.weight"] = rng.standard_normal((I, H)) / np.sqrt(H)
            t[q + "up_proj.weight"] = rng.standard_normal((I, H)) / np.sqrt(H)
            t[q + "down_proj.weight"] = rng.standard_normal((H, I)) / np.sqrt(I)
    tc = {"hidden_size": H, "num_hidden_layers": nl, "num_attention_heads": nh,
          "num_key_value_heads": nkv, "vocab_size": V, "num_local_experts": E,
          "num_experts_per_tok": K, "moe_intermediate_size": I, "intermediate_size": Id,
          "norm_topk_prob": True, "mlp_only_layers": [1], "rms_norm_eps": 1e-6,
          "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}}
    d = os.path.join(scratch, "random")
    write_model(d, "qwen3_moe", tc, t, "F32", shards=3)
    samples = [list(rng.integers(1, V, size=n)) for n in (7, 13, 2, 9, 30, 4)]
    write_calib(os.path.join(d, "calib.jsonl"), samples)
    a = run_oracle(d, os.path.join(d, "calib.jsonl"), 11, os.path.join(d, "a.json"))
    check([l["layer"] for l in a["layers"]] == [0, 2], "random: MoE layers")
    for L in a["layers"]:
        check(sum(L["count"]) == K * a["tokens"], "random: sum count layer %d" % L["layer"])
        check(abs(sum(L["sum_gate"]) - a["tokens"]) < 1e-9 * a["tokens"],
              "random: renormalised gates sum layer %d" % L["layer"])
        check(all(x > 0 for x in L["sum_norm"]), "random: norms positive")
        check(L["min_topk_gap"] > 0, "random: gap")
    # masked positions must not influence anything: rewrite the gap/pad tokens
    tok, mask = ro.build_rows(samples, 11, True)
    cfg = ro.Config(os.path.join(d, "config.json"))
    ck = ro.Checkpoint(d)
    base = ro.run(cfg, ck, tok, mask)
    tok2 = np.where(mask, tok, rng.integers(0, V, size=tok.shape))
    other = ro.run(cfg, ck, tok2, mask)
    same = all(x[k] == y[k] for x, y in zip(base, other)
               for k in ("count", "sum_gate_norm", "sum_norm", "sum_gate", "max_act"))
    check(same, "random: masked tokens changed the statistics")
    for lb, la in zip(base, a["layers"]):
        check(lb["count"] == la["count"], "random: in-process run differs from CLI")
    # --max-samples 2 and --no-pack
    b = run_oracle(d, os.path.join(d, "calib.jsonl"), 11, os.path.join(d, "b.json"),
                   ["--no-pack", "--max-samples", "2"])
    check(b["tokens"] == 7 + 11, "max-samples/no-pack tokens %d" % b["tokens"])
    print("random model: ok (%d tokens, counts %s)" % (a["tokens"], a["layers"][0]["count"]))
    # Positions: squeeze the masked gaps out of the packed rows. Masked keys are never
    # attended to, so only the positions can tell the two apart.
    sq_tok, sq_mask = np.zeros_like(tok), np.zeros_like(mask)
    for r in range(tok.shape[0]):
        n = int(mask[r].sum())
        sq_tok[r, :n], sq_mask[r, :n] = tok[r][mask[r]], True
    check(not np.array_equal(sq_mask, mask), "random: the packed rows have inner gaps")
    vd = os.path.join(scratch, "random_vl")
    write_model(vd, "qwen3_vl_moe", tc,
                {k.replace(pre, "model.language_model.", 1): v for k, v in t.items()}, "F32")
    vcfg = ro.Config(os.path.join(vd, "config.json"))
    vck = ro.Checkpoint(vd)
    for name, c, k_, want_same in (("qwen3_vl_moe", vcfg, vck, True),
                                   ("qwen3_moe", cfg, ck, False)):
        packed, squeezed = ro.run(c, k_, tok, mask), ro.run(c, k_, sq_tok, sq_mask)
        worst = max(abs(x - y) / max(abs(x), abs(y), 1e-300)
                    for lp, ls in zip(packed, squeezed)
                    for key in ("sum_gate_norm", "sum_norm", "sum_gate")
                    for x, y in zip(lp[key], ls[key]))
        same = worst < 1e-9 and all(lp["count"] == ls["count"]
                                    for lp, ls in zip(packed, squeezed))
        check(same == want_same, "random %s: gaps squeezed out %s the statistics (worst rel "
              "diff %.2e)" % (name, "changed" if want_same else "did not change", worst))
        print("random model as %s: packed vs gaps squeezed out: worst rel diff %.2e"
              % (name, worst))


def main():
    scratch = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="oracle_self_")
    os.makedirs(scratch, exist_ok=True)
    packing()
    attention_check()
    analytic(scratch, "qwen3_moe", False, "F32")
    analytic(scratch, "qwen3_vl_moe", True, "BF16")
    random_model(scratch)
    if FAILS:
        print("selfcheck_oracle: %d failure(s)" % len(FAILS))
        return 1
    print("selfcheck_oracle: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

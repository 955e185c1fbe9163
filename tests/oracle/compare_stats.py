#!/usr/bin/python3
"""compare_stats.py - check the engine's REAP statistics against the float64 oracle.

    compare_stats.py ENGINE.json ORACLE.json [--rtol 1e-5]

Both files are "reap-stats/1" JSON (the oracle's also carries min_topk_gap per layer).
Checks, per MoE layer: same layer ids, n_experts, top_k and token counts (exact); counts
exact; max relative error |a-b| / max(|b|, tiny) <= rtol on sum_gate_norm, sum_norm,
sum_gate and reap; max_act within rtol relative to the layer's largest |max_act| (null,
i.e. never routed, must match); identical sets of experts dropped when removing
floor(E*0.5) and floor(E*0.25) lowest-reap experts (ties: the lower index is kept).
Prints one summary line per layer; exits 1 on any failure, 2 on unreadable input.
A count mismatch in a layer whose min_topk_gap < 1e-5 is reported as a near-tie of the
random data (choose another seed); it still fails.
"""

import argparse
import json
import math
import sys

TINY = 1e-30
NEAR_TIE = 1e-5
RATIOS = (0.5, 0.25)


def load(path):
    try:
        with open(path, "r", encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        print("compare_stats: cannot read %s: %s" % (path, exc), file=sys.stderr)
        sys.exit(2)
    if doc.get("format") != "reap-stats/1":
        print("compare_stats: %s: format is %r, expected reap-stats/1"
              % (path, doc.get("format")), file=sys.stderr)
        sys.exit(2)
    return doc


def num(v):
    """JSON value -> float; null (never routed) -> None."""
    if v is None:
        return None
    if isinstance(v, str):          # tolerate "-inf"/"nan" spelled as strings
        return float(v)
    return float(v)


def max_rel(a, b):
    worst = 0.0
    for x, y in zip(a, b):
        err = abs(num(x) - num(y)) / max(abs(num(y)), TINY)
        worst = max(worst, err)
    return worst


def dropped(reap, ratio):
    """Indices dropped when removing floor(E*ratio) lowest scores; among equal scores
    the higher index is dropped first (the lower index is kept)."""
    e = len(reap)
    n = int(math.floor(e * ratio))
    order = sorted(range(e), key=lambda j: (num(reap[j]), -j))
    return sorted(order[:n])


def compare_layer(le, lo, rtol):
    """Returns (list of failure strings, summary string)."""
    fails = []
    L = lo["layer"]
    for key in ("n_experts", "top_k", "tokens"):
        if le.get(key) != lo.get(key):
            fails.append("%s engine %r oracle %r" % (key, le.get(key), lo.get(key)))
    E = lo["n_experts"]
    for key in ("count", "sum_gate_norm", "sum_norm", "sum_gate", "max_act", "reap"):
        if len(le.get(key) or []) != E or len(lo.get(key) or []) != E:
            fails.append("%s: length differs from n_experts %d" % (key, E))
    if fails:
        return fails, "layer %d: malformed" % L

    bad = [j for j in range(E) if int(le["count"][j]) != int(lo["count"][j])]
    if bad:
        msg = "count differs for experts %s (engine %s, oracle %s)" % (
            bad, [le["count"][j] for j in bad], [lo["count"][j] for j in bad])
        gap = lo.get("min_topk_gap")
        if gap is not None and gap < NEAR_TIE:
            msg += ("; NEAR-TIE: min_topk_gap %.3g < %g, the random data has an almost "
                    "tied K-th/(K+1)-th router logit, pick another seed" % (gap, NEAR_TIE))
        fails.append(msg)

    errs = {}
    for key in ("sum_gate_norm", "sum_norm", "sum_gate", "reap"):
        errs[key] = max_rel(le[key], lo[key])
        if not errs[key] <= rtol:
            fails.append("%s max rel err %.3g > %g" % (key, errs[key], rtol))

    scale = max([abs(num(v)) for v in lo["max_act"] if v is not None] + [TINY])
    err_max = 0.0
    for j in range(E):
        a, b = num(le["max_act"][j]), num(lo["max_act"][j])
        if (a is None or math.isinf(a)) and b is None:
            continue
        if a is None or b is None or math.isinf(a):
            fails.append("max_act[%d]: engine %r oracle %r" % (j, le["max_act"][j],
                                                               lo["max_act"][j]))
            continue
        err_max = max(err_max, abs(a - b) / scale)
    errs["max_act"] = err_max
    if not err_max <= rtol:
        fails.append("max_act max err %.3g (relative to %.3g) > %g" % (err_max, scale, rtol))

    for r in RATIOS:
        de, do = dropped(le["reap"], r), dropped(lo["reap"], r)
        if de != do:
            fails.append("ratio %g: engine drops %s, oracle drops %s" % (r, de, do))

    gap = lo.get("min_topk_gap")
    summary = ("layer %d: E %d K %d tokens %d | rel err gate_norm %.2e norm %.2e gate %.2e "
               "reap %.2e max_act %.2e | min_topk_gap %s | %s" % (
                   L, E, lo["top_k"], lo["tokens"], errs["sum_gate_norm"], errs["sum_norm"],
                   errs["sum_gate"], errs["reap"], errs["max_act"],
                   "%.2e" % gap if gap is not None else "n/a", "FAIL" if fails else "ok"))
    return fails, summary


def main(argv):
    ap = argparse.ArgumentParser(description="compare engine statistics with the oracle")
    ap.add_argument("engine")
    ap.add_argument("oracle")
    ap.add_argument("--rtol", type=float, default=1e-5)
    a = ap.parse_args(argv)
    eng, ora = load(a.engine), load(a.oracle)
    failures = 0
    if eng.get("tokens") != ora.get("tokens"):
        print("tokens: engine %r oracle %r" % (eng.get("tokens"), ora.get("tokens")))
        failures += 1
    el = {l["layer"]: l for l in eng.get("layers", [])}
    ol = {l["layer"]: l for l in ora.get("layers", [])}
    if sorted(el) != sorted(ol):
        print("MoE layers: engine %s oracle %s" % (sorted(el), sorted(ol)))
        failures += 1
    for L in sorted(ol):
        if L not in el:
            continue
        fails, summary = compare_layer(el[L], ol[L], a.rtol)
        print(summary)
        for f in fails:
            print("  layer %d: %s" % (L, f))
        failures += len(fails)
    print("compare_stats: %d layers, rtol %g: %s" % (len(ol), a.rtol,
          "%d failure(s)" % failures if failures else "all match"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

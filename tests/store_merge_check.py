#!/usr/bin/python3
"""store_merge_check.py - the store's merge is exact arithmetic on the stored records.

    store_merge_check.py MERGED.json PART.json [PART.json ...]

All files are reap-stats/1 JSON. MERGED must equal the parts folded in the order given
(the store merges in ascending calibration-id order: pass the parts in that order):
starting from the first part, counts and tokens added as integers, sums added in
float64 (Python floats are IEEE doubles: the same additions the C code does), max_act
the maximum (null = never routed). Equality is exact (==), not within a tolerance.
Also checks that MERGED's calib_id lists the parts' ids in that order.
Exits 0 when equal, 1 on a difference, 2 on unreadable input.
"""

import json
import sys

SUMS = ("sum_gate_norm", "sum_norm", "sum_gate")


def load(path):
    try:
        with open(path, "r", encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        print("store_merge_check: cannot read %s: %s" % (path, exc), file=sys.stderr)
        sys.exit(2)
    if doc.get("format") != "reap-stats/1":
        print("store_merge_check: %s is not reap-stats/1" % path, file=sys.stderr)
        sys.exit(2)
    return doc


def fold(parts):
    out = json.loads(json.dumps(parts[0]))
    for p in parts[1:]:
        out["tokens"] += p["tokens"]
        for lo, lp in zip(out["layers"], p["layers"]):
            if (lo["layer"], lo["n_experts"], lo["top_k"]) != \
               (lp["layer"], lp["n_experts"], lp["top_k"]):
                raise ValueError("parts disagree on layer %r" % lo["layer"])
            lo["tokens"] += lp["tokens"]
            for e in range(lo["n_experts"]):
                lo["count"][e] += lp["count"][e]
                for k in SUMS:
                    lo[k][e] = float(lo[k][e]) + float(lp[k][e])
                a, b = lo["max_act"][e], lp["max_act"][e]
                lo["max_act"][e] = b if a is None else a if b is None else max(a, b)
    return out


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    merged = load(sys.argv[1])
    parts = [load(p) for p in sys.argv[2:]]
    want = fold(parts)
    bad = []
    ids = ",".join(p["calib_id"] for p in parts)
    if merged.get("calib_id") != ids:
        bad.append("calib_id %r, parts %r" % (merged.get("calib_id"), ids))
    if merged["tokens"] != want["tokens"] or len(merged["layers"]) != len(want["layers"]):
        bad.append("tokens or layer count differ")
    for lm, lw in zip(merged["layers"], want["layers"]):
        for k in ("layer", "n_experts", "top_k", "tokens", "count") + SUMS + ("max_act",):
            if k in SUMS:
                same = all(float(x) == float(y) for x, y in zip(lm[k], lw[k]))
            else:
                same = lm[k] == lw[k]
            if not same:
                bad.append("layer %d: %s differs" % (lm["layer"], k))
    for b in bad:
        print("store_merge_check: " + b)
    if bad:
        return 1
    print("store_merge_check: %d layers: merged view = exact fold of %d parts"
          % (len(merged["layers"]), len(parts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""`reap-scorer plan` on the full-size Qwen3-VL-235B-A22B AWQ config (only config.json is
read), checked against sizes computed here from the config itself:

  * hidden states = rows x seq_len x H x 4 bytes;
  * one MoE layer in a bf16 checkpoint = 2 bytes x (E x 3 x H x I experts + q/k/v/o
    projections + router + the four norms);
  * the side-by-side lines for an H200 (140 GB) and an H100 (80 GB): both present, each
    peak within its budget (card x (1 - 10%)), the H100 micro-batch not larger than the
    H200's; and a card is reported as "does not fit" exactly when the hidden states plus
    two weight sets already exceed its budget (for the sizes used here, nothing else
    decides it).

usage: plan_check.py BIN_DIR FIXTURE_DIR
"""
import json
import os
import re
import subprocess
import sys

bin_dir, fixture = sys.argv[1], sys.argv[2]
cfg = json.load(open(os.path.join(fixture, "config.json")))
tc = cfg.get("text_config", cfg)
H, I = tc["hidden_size"], tc["moe_intermediate_size"]
E = tc.get("num_experts", tc.get("num_local_experts"))
nh, nkv = tc["num_attention_heads"], tc["num_key_value_heads"]
hd = tc.get("head_dim", H // nh)
moe_bf16 = 2 * (E * 3 * H * I + H * nh * hd + 2 * H * nkv * hd + nh * hd * H + E * H
                + 2 * H + 2 * hd)
fails = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails.append(what)


def plan(rows, seq):
    r = subprocess.run([os.path.join(bin_dir, "reap-scorer"), "plan", "--model", fixture,
                        "--rows", str(rows), "--seq-len", str(seq), "--vram-gb", "140"],
                       capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def num(out, label):
    m = re.search(re.escape(label) + r"\s+(\d+)", out)
    return int(m.group(1)) if m else None


for rows, seq in ((300, 2048), (2000, 2048), (1024, 4096)):
    rc, out, err = plan(rows, seq)
    tag = f"{rows} x {seq}"
    hidden = rows * seq * H * 4
    check(num(out, "hidden states [T, H] fp32") == hidden,
          f"{tag}: hidden states {hidden} bytes")
    check(num(out, "MoE layer in a bf16 checkpoint (upload)") == moe_bf16,
          f"{tag}: bf16 MoE layer {moe_bf16} bytes")
    batches = {}
    for card, gb in (("H200", 140), ("H100", 80)):
        budget = gb * 1e9 * 0.9
        m = re.search(card + r" \(\s*\d+ GB\): micro-batch\s+(\d+) rows,\s+\d+ chunks per "
                      r"layer, peak\s+([\d.]+) GB of\s+([\d.]+) GB", out)
        nofit = re.search(card + r" \(\s*\d+ GB\): does not fit", out)
        must_fail = hidden + 2 * moe_bf16 > budget
        check(bool(m) != bool(nofit), f"{tag}: one {card} line")
        check(bool(nofit) == must_fail, f"{tag}: {card} {'does not fit' if must_fail else 'fits'}")
        if m:
            batches[card] = int(m.group(1))
            check(float(m.group(2)) <= float(m.group(3)) + 1e-9 and
                  abs(float(m.group(3)) - budget / 1e9) < 0.01,
                  f"{tag}: {card} peak {m.group(2)} GB within {budget / 1e9:.2f} GB")
    if len(batches) == 2:
        check(batches["H100"] <= batches["H200"], f"{tag}: H100 micro-batch <= H200's")
    check((rc == 0) == (hidden + 2 * moe_bf16 <= 140e9 * 0.9), f"{tag}: exit {rc} for the 140 GB plan")

if fails:
    print(f"{len(fails)} checks FAILED")
    sys.exit(1)
print("all checks passed")

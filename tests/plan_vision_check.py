#!/usr/bin/env python3
"""`reap-scorer plan --image-tokens N` on a generated Qwen3-VL checkpoint with a real vision
tower, checked against sizes computed here from config.json and the checkpoint's own
safetensors header (not from the C code):

  * tower weights = 4 bytes x every model.visual.* element in the file, plus the zero
    rows cpu_gemm's packing adds to each linear weight (output rows rounded up to 16,
    model/cpu/cpu_gemm.h); the sizes are chosen so that the padding is not zero;
  * tower activations = 4 x (Np x (3 Hv + max(3 Hv, Iv) + 2 hd) + threads x attention
    scratch of a frame of Np patches), Np = --vision-batch;
  * one call's buffers = 4 x (2 Np D + Nd x Np / m^2 x H);
  * kept features = image tokens x H x (1 + Nd) x 4, slots = image tokens x 8;
  * on the device: the resident line grows by exactly the modality plane [T] and the
    256-row scatter staging (each rounded up to 256 bytes), nothing else changes;
  * without --image-tokens (or with 0) the plan prints nothing about images and its
    device lines equal those of the same plan with images less that growth;
  * --image-tokens on a checkpoint without a tower is refused, naming config.json.

usage: plan_vision_check.py BIN_DIR WORK_DIR
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys

bin_dir, work = sys.argv[1], sys.argv[2]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
fails = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        fails.append(what)


def run(*args):
    return subprocess.run([os.path.join(bin_dir, args[0])] + list(args[1:]),
                          capture_output=True, text=True)


def num(out, label):
    m = re.search(re.escape(label) + r"\s+(\d+)\s", out)
    return int(m.group(1)) if m else None


def ceil_to(n, k):
    return (n + k - 1) // k * k


model = os.path.join(work, "vl")
r = run("reap-genmodel", "--out", model, "--family", "qwen3_vl_moe", "--vision",
        "--vis-hidden", "40", "--vis-heads", "2", "--vis-inter", "72", "--vis-depth", "3",
        "--vis-deepstack", "0,2")
check(r.returncode == 0, "reap-genmodel --vision: " + r.stderr.strip()[-200:])
cfg = json.load(open(os.path.join(model, "config.json")))
vc = cfg["vision_config"]
tc = cfg.get("text_config", cfg)
H, E = tc["hidden_size"], tc.get("num_experts", 0)
Hv, Iv, nh = vc["hidden_size"], vc["intermediate_size"], vc["num_heads"]
hd, m = Hv // nh, vc["spatial_merge_size"]
D = vc["in_channels"] * vc["temporal_patch_size"] * vc["patch_size"] ** 2
Nd = len(vc["deepstack_visual_indexes"])

# every model.visual.* tensor of the checkpoint, from the safetensors headers
weights = 0
for name in sorted(os.listdir(model)):
    if not name.endswith(".safetensors"):
        continue
    with open(os.path.join(model, name), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    for key, t in hdr.items():
        if not key.startswith("model.visual."):
            continue
        elems = 1
        for s in t["shape"]:
            elems *= s
        weights += 4 * elems
        if key.endswith(".weight") and len(t["shape"]) in (2, 5):  # linears, the Conv3d
            out = t["shape"][0]
            weights += 4 * (ceil_to(out, 16) - out) * (elems // out)
check(weights > 0, f"the checkpoint has vision tensors ({weights} bytes in fp32 + padding)")

rows, seq, nt, np_, thr = 4, 128, 200, 1000, 3
T = rows * seq


def scratch(L):
    return L * hd + ceil_to(L, 16) * hd + hd * L + ceil_to(hd, 16) * L + 64 * L + 64 * hd


act = 4 * (np_ * (3 * Hv + max(3 * Hv, Iv) + 2 * hd) + thr * scratch(np_))
batch = 4 * (2 * np_ * D + Nd * (np_ // (m * m)) * H)
feat = nt * H * (1 + Nd) * 4
slots = nt * 8
dev = (ceil_to(T, 256) if E else 0) + ceil_to(256 * 8, 256) + ceil_to(256 * H * 4, 256)

base = ["reap-scorer", "plan", "--model", model, "--rows", str(rows), "--seq-len", str(seq),
        "--vram-gb", "10"]
ri = run(*base, "--image-tokens", str(nt), "--vision-batch", str(np_), "--threads", str(thr))
rt = run(*base)
r0 = run(*base, "--image-tokens", "0")
check(ri.returncode == 0 and rt.returncode == 0 and r0.returncode == 0,
      "plans exit 0: " + (ri.stderr + rt.stderr + r0.stderr).strip()[-200:])
out = ri.stdout
check(num(out, "tower weights, fp32") == weights, f"tower weights {weights}")
check(num(out, f"tower activations ({np_} patches, {thr} thr)") == act,
      f"tower activations {act}")
check(num(out, "patches and outputs of one tower call") == batch, f"one call's buffers {batch}")
check(num(out, f"kept features (x {1 + Nd}: merged + deepstack)") == feat,
      f"kept features {feat} = {nt} x {H} x {1 + Nd} x 4")
check(num(out, "image token slots (engine)") == slots, f"slots {slots}")
check(num(out, "host memory of the image side") == weights + act + batch + feat + slots,
      "host total is the sum")
m_dev = re.search(r"on the device the images add (\d+) bytes", out)
check(m_dev is not None and int(m_dev.group(1)) == dev, f"device bytes of images {dev}")
res_i = num(out, "resident (hidden, tokens, routing, stats)")
res_t = num(rt.stdout, "resident (hidden, tokens, routing, stats)")
check(res_i is not None and res_t is not None and res_i - res_t == dev,
      f"resident grows by exactly {dev} bytes")
peak_i, peak_t = num(out, "expected peak"), num(rt.stdout, "expected peak")
check(peak_i is not None and peak_t is not None and peak_i - peak_t == dev,
      f"peak grows by exactly {dev} bytes")
for label in ("hidden states [T, H] fp32", "MoE layer weights on the device",
              "weight sets (1 + 1 prefetched)", "staging (2 slots; 2 more pinned on host)",
              "margin (cuBLAS, driver)"):
    check(num(out, label) is not None and num(out, label) == num(rt.stdout, label),
          f"unchanged with images: {label}")
check("image" not in rt.stdout and rt.stdout == r0.stdout,
      "text-only plan: no image lines, --image-tokens 0 is the same plan")

# doubling the image tokens doubles the features and the slots, nothing else of the host side
r2 = run(*base, "--image-tokens", str(2 * nt), "--vision-batch", str(np_), "--threads", str(thr))
check(num(r2.stdout, "host memory of the image side") == weights + act + batch + 2 * (feat + slots),
      "twice the image tokens: features and slots twice")

text = os.path.join(work, "text")
r = run("reap-genmodel", "--out", text)
rr = run("reap-scorer", "plan", "--model", text, "--rows", "4", "--seq-len", "128",
         "--vram-gb", "10", "--image-tokens", "10")
check(rr.returncode != 0 and "no vision tower" in rr.stderr and "config.json" in rr.stderr,
      "--image-tokens without a tower refused: " + rr.stderr.strip()[-160:])

if fails:
    print(f"{len(fails)} checks FAILED")
    sys.exit(1)
print("all checks passed")

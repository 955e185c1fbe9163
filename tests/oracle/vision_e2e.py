#!/usr/bin/env python3
"""vision_e2e.py - the two Python halves of the image calibration test
(tests/run_vision_e2e.sh); standard library + numpy only.

  vision_e2e.py make DIR --case NAME
      writes DIR/imgs/*.png (generated images of awkward sizes: RGB, grayscale, RGBA,
      written with zlib + struct) and DIR/calib.jsonl, the calibration file of the case
      (image items in both forms, two images in one sample, text-only items beside them),
      and DIR/images.json (each image's width and height, for the check).

  vision_e2e.py index DIR
      for images and DIR/calib.jsonl written by `reap-genmodel --images DIR` (PNG and
      JPEG): writes DIR/images.json from the calibration file's image references and
      each file's header (PNG IHDR, JPEG SOFn), read here without any image library.

  vision_e2e.py oracle MODEL DIR DUMP --seq-len N [--min-pixels A] [--max-pixels B]
                       --out STATS
      DUMP is what `reap-scorer run --dump-vision` wrote (vision_dump.h). Checks, from the
      spec and independent of the C code: each image's patch grid against smart_resize of
      its known size (Python's round, halves to even); each image span in the rows is
      <|vision_start|> + n x <|image_pad|> + <|vision_end|> with n = t*gh*gw/merge^2.
      Then runs the float64 vision tower (vision_oracle.py) on the dumped patches (the
      preprocessing itself is compared with Pillow/transformers by tests/image_compare.py),
      reports its distance to the C features, and runs reap_oracle.py on the dumped rows
      with the float64 features (--rows, --images): STATS is the reference statistics.
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reap_oracle import Checkpoint  # noqa: E402
from vision_oracle import vision_config, vision_forward, rel_l2  # noqa: E402

VISION_START, VISION_END, IMAGE_PAD = 151652, 151653, 151655


# ---- images -------------------------------------------------------------------------------

def png_bytes(w, h, channels, pixel):
    """An 8-bit PNG (channels 1: gray, 3: RGB, 4: RGBA); pixel(x, y) -> tuple."""
    ctype = {1: 0, 3: 2, 4: 6}[channels]
    raw = bytearray()
    for y in range(h):
        raw.append(0)                       # filter: none
        for x in range(w):
            raw.extend(pixel(x, y)[:channels])

    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b""))


def pattern(seed):
    """Deterministic busy pixels: gradients, stripes and a hash (different per seed)."""
    def px(x, y):
        hsh = (x * 73856093 ^ y * 19349663 ^ seed * 83492791) & 0xFFFF
        r = (x * 7 + seed * 31 + (hsh & 31)) & 255
        g = (y * 11 + (x // 3) * 5 + seed * 17) & 255
        b = ((x + y) * 13 + ((hsh >> 5) & 63)) & 255
        a = (x * 29 + y * 3 + seed) & 255
        return (r, g, b, a)
    return px


# name: (width, height, channels)
IMAGES = {
    "a.png": (37, 23, 3),      # odd, upscaled to min_pixels
    "b.png": (50, 61, 3),
    "c.png": (19, 90, 1),      # tall grayscale
    "d.png": (70, 45, 4),      # RGBA: alpha dropped
    "e.png": (33, 33, 3),
    "f.png": (88, 75, 3),      # big: max_pixels matters
}

CASES = {
    # packed rows: image + text packing, two images in one sample, text-only items
    "packed": [
        {"messages": [{"role": "user", "content": [
            {"type": "image", "image": "imgs/a.png"},
            {"type": "text", "text": "Where is the dog? Answer with a box."}]},
            {"role": "assistant", "content": "[3, 4, 20, 17]"}]},
        {"text": "A text-only item beside the images, long enough to take some room."},
        {"image": "imgs/c.png", "text": "Describe the picture."},
        {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image", "image": "imgs/b.png"},
            {"type": "text", "text": "with"},
            {"type": "image", "image": "imgs/d.png"}]},
            {"role": "assistant", "content": "They differ."}]},
        {"messages": [{"role": "user", "content": "Text only, as a conversation."},
                      {"role": "assistant", "content": "Yes."}]},
        {"image": "imgs/e.png", "text": "Count the stripes."},
    ],
    # one row per sample, a lower max_pixels, two images of one sample, a text item first
    "nopack": [
        {"text": "First a text item."},
        {"messages": [{"role": "user", "content": [
            {"type": "image", "image": "imgs/f.png"},
            {"type": "image", "image": "imgs/a.png"},
            {"type": "text", "text": "Which one is bigger?"}]}]},
        {"image": "imgs/d.png", "text": "Box?"},
        {"image": "imgs/c.png", "text": "Tall."},
    ],
}


def make(a):
    os.makedirs(os.path.join(a.dir, "imgs"), exist_ok=True)
    sizes = {}
    for k, (name, (w, h, ch)) in enumerate(sorted(IMAGES.items())):
        with open(os.path.join(a.dir, "imgs", name), "wb") as fh:
            fh.write(png_bytes(w, h, ch, pattern(k + 1)))
        sizes["imgs/" + name] = [w, h]
    with open(os.path.join(a.dir, "calib.jsonl"), "w", encoding="utf-8") as fh:
        for item in CASES[a.case]:
            fh.write(json.dumps(item) + "\n")
    with open(os.path.join(a.dir, "images.json"), "w", encoding="utf-8") as fh:
        json.dump({"sizes": sizes, "order": image_order(CASES[a.case])}, fh)
    return 0


def image_order(items):
    """The images in calibration order (item order, then part order)."""
    out = []
    for it in items:
        if "messages" in it:
            for m in it["messages"]:
                if isinstance(m["content"], list):
                    out += [p["image"] for p in m["content"] if p.get("type") == "image"]
        elif "image" in it:
            out.append(it["image"])
    return out


def header_size(path):
    """(width, height) from a PNG's IHDR or a JPEG's SOFn marker."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack(">II", data[16:24])
    if data[:2] != b"\xff\xd8":
        raise SystemExit("vision_e2e: %s: neither PNG nor JPEG" % path)
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise SystemExit("vision_e2e: %s: bad JPEG marker at %d" % (path, i))
        m = data[i + 1]
        if m == 0xFF:
            i += 1
            continue
        seglen = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + seglen
    raise SystemExit("vision_e2e: %s: no SOF marker" % path)


def index(a):
    with open(os.path.join(a.dir, "calib.jsonl"), encoding="utf-8") as fh:
        items = [json.loads(line) for line in fh if line.strip()]
    order = image_order(items)
    sizes = {ref: list(header_size(os.path.join(a.dir, ref))) for ref in set(order)}
    with open(os.path.join(a.dir, "images.json"), "w", encoding="utf-8") as fh:
        json.dump({"sizes": sizes, "order": order}, fh)
    print("vision_e2e: %d images: %s" % (len(order), ", ".join(
        "%s %dx%d" % (r, sizes[r][0], sizes[r][1]) for r in order)))
    return 0


# ---- the check ----------------------------------------------------------------------------

def smart_resize(h, w, factor, min_pixels, max_pixels):
    """Qwen2-VL's smart_resize as the processor documents it (Python round)."""
    if max(h, w) / min(h, w) > 200:
        raise SystemExit("vision_e2e: aspect ratio over 200")
    hb = round(h / factor) * factor
    wb = round(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb = max(factor, math.floor(h / beta / factor) * factor)
        wb = max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb = math.ceil(h * beta / factor) * factor
        wb = math.ceil(w * beta / factor) * factor
    return hb, wb


def oracle(a):
    with open(os.path.join(a.model, "preprocessor_config.json"), encoding="utf-8") as fh:
        prep = json.load(fh)
    min_px = a.min_pixels or prep.get("min_pixels", prep["size"]["shortest_edge"])
    max_px = a.max_pixels or prep.get("max_pixels", prep["size"]["longest_edge"])
    vc = vision_config(a.model)
    P, m = vc["patch_size"], vc["spatial_merge_size"]
    with open(os.path.join(a.dir, "images.json"), encoding="utf-8") as fh:
        known = json.load(fh)
    with open(os.path.join(a.dump, "meta.json"), encoding="utf-8") as fh:
        meta = json.load(fh)
    with open(os.path.join(a.dump, "rows.json"), encoding="utf-8") as fh:
        rows = json.load(fh)
    grids = [tuple(g) for g in meta["grids"]]

    # Grids from the known sizes (every image of the file is in the rows here).
    if len(grids) != len(known["order"]):
        raise SystemExit("vision_e2e: %d images scored, the file has %d"
                         % (len(grids), len(known["order"])))
    for i, (ref, g) in enumerate(zip(known["order"], grids)):
        w, h = known["sizes"][ref]
        hb, wb = smart_resize(h, w, P * m, min_px, max_px)
        if g != (1, hb // P, wb // P):
            raise SystemExit("vision_e2e: image %d (%s, %dx%d): grid %s, smart_resize gives %s"
                             % (i, ref, w, h, g, (1, hb // P, wb // P)))
    # Spans: vision_start, n image pads, vision_end.
    toks = rows["tokens"]
    n_pad = sum(r.count(IMAGE_PAD) for r in toks)
    total = 0
    for sp in meta["spans"]:
        t, gh, gw = grids[sp["image"]]
        n = t * gh * gw // (m * m)
        row, s = toks[sp["row"]], sp["start"]
        if s < 1 or row[s - 1] != VISION_START or row[s:s + n] != [IMAGE_PAD] * n or \
                (s + n < len(row) and row[s + n] != VISION_END):
            raise SystemExit("vision_e2e: span %r is not vision_start + %d pads + vision_end"
                             % (sp, n))
        total += n
    if total != n_pad or total != meta["n_tokens"]:
        raise SystemExit("vision_e2e: %d image pads in the rows, %d in spans, %d features"
                         % (n_pad, total, meta["n_tokens"]))

    # The float64 tower on the dumped patches.
    D = vc["in_channels"] * vc["temporal_patch_size"] * P * P
    H = vc["out_hidden_size"]
    patches = np.fromfile(os.path.join(a.dump, "patches.f32"), dtype="<f4").astype(np.float64)
    patches = patches.reshape(meta["n_patches"], D)
    ck = Checkpoint(a.model)
    merged, deep = vision_forward(vc, ck, patches, grids)
    c_out = np.fromfile(os.path.join(a.dump, "out.f32"), dtype="<f4").reshape(-1, H)
    err = rel_l2(c_out, merged)
    nd = meta["n_deepstack"]
    c_deep = np.fromfile(os.path.join(a.dump, "deep.f32"), dtype="<f4")
    c_deep = c_deep.reshape(nd, meta["n_tokens"], H) if nd else np.zeros((0, 0, H))
    if len(deep) != nd:
        raise SystemExit("vision_e2e: %d deepstack sets, the C side wrote %d" % (len(deep), nd))
    errs = [rel_l2(c_deep[k], deep[k]) for k in range(nd)]
    print("vision_e2e: %d images %s, %d image tokens; tower vs float64: merger %.2e, "
          "deepstack %s" % (len(grids), grids, meta["n_tokens"], err,
                            ", ".join("%.2e" % e for e in errs)))
    if not max([err] + errs) <= 1e-4:
        raise SystemExit("vision_e2e: the C vision features are off the float64 tower")

    work = os.path.join(a.dump, "oracle")
    os.makedirs(work, exist_ok=True)
    np.save(os.path.join(work, "merged.npy"), merged)
    names = []
    for k, d in enumerate(deep):
        names.append("deep%d.npy" % k)
        np.save(os.path.join(work, names[-1]), d)
    spec = {"merge": m, "images": [{"grid": list(g)} for g in grids], "spans": meta["spans"],
            "merged": "merged.npy", "deepstack": names}
    with open(os.path.join(work, "spec.json"), "w", encoding="utf-8") as fh:
        json.dump(spec, fh)
    return subprocess.call([sys.executable, os.path.join(HERE, "reap_oracle.py"),
                            "--model", a.model, "--rows", os.path.join(a.dump, "rows.json"),
                            "--seq-len", str(a.seq_len), "--images",
                            os.path.join(work, "spec.json"), "--out", a.out])


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("dir")
    mk.add_argument("--case", required=True, choices=sorted(CASES))
    ix = sub.add_parser("index")
    ix.add_argument("dir")
    orc = sub.add_parser("oracle")
    orc.add_argument("model")
    orc.add_argument("dir")
    orc.add_argument("dump")
    orc.add_argument("--seq-len", type=int, required=True)
    orc.add_argument("--min-pixels", type=int, default=0)
    orc.add_argument("--max-pixels", type=int, default=0)
    orc.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    return {"make": make, "index": index, "oracle": oracle}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
